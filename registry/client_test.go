package registry

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// countingListener counts accepted TCP connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startExchanger serves s on one port for UDP and TCP and returns a
// DialExchanger for it and the TCP connection count.
func startExchanger(t *testing.T, s *Server) (DialExchanger, *atomic.Int32) {
	t.Helper()
	pc, ln := mustListenBoth(t)
	cl := &countingListener{Listener: ln}
	addr, _ := startOn(t, s, pc, cl)
	var d net.Dialer
	return DialExchanger{Dial: d.DialContext, Addr: addr}, &cl.n
}

func TestLookup(t *testing.T) {
	ex, _ := startExchanger(t, &Server{Zone: "mesh.", Members: unitMembers})
	ctx := context.Background()
	for _, m := range []Member{alpha, beta} {
		got, err := Lookup(ctx, ex, "mesh", m.PublicKey)
		if err != nil || got != m.Endpoint {
			t.Errorf("Lookup(%s) = %v, %v; want %v", m.PublicKey.Short(), got, err, m.Endpoint)
		}
	}
	for _, k := range []peerbook.Key{gamma.PublicKey, testKey(99)} {
		if got, err := Lookup(ctx, ex, "mesh.", k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%s) = %v, %v; want ErrNotFound", k.Short(), got, err)
		}
	}
	if _, err := Lookup(ctx, ex, "other.", alpha.PublicKey); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup outside the zone: %v, want REFUSED", err)
	}
}

func TestList(t *testing.T) {
	ex, tcp := startExchanger(t, &Server{Zone: "mesh.", Members: unitMembers})
	got, err := List(context.Background(), ex, "mesh.")
	if err != nil {
		t.Fatal(err)
	}
	checkMembers(t, got, []Member{alpha, beta})
	if tcp.Load() != 0 {
		t.Errorf("%d TCP connections for a small list", tcp.Load())
	}
	// An empty registry.
	ex, _ = startExchanger(t, &Server{Zone: "mesh.", Members: func() []Member { return nil }})
	if got, err := List(context.Background(), ex, "mesh."); err != nil || len(got) != 0 {
		t.Errorf("empty registry: %v, %v", got, err)
	}
}

func checkMembers(t *testing.T, got, want []Member) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d members, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].PublicKey != want[i].PublicKey || got[i].Endpoint != want[i].Endpoint || !slices.Equal(got[i].AllowedIPs, want[i].AllowedIPs) {
			t.Errorf("member %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestTruncatedRetriesOverTCP lists more members than fit in 1232 bytes,
// and looks up a member whose SRV reply is too large as well.
func TestTruncatedRetriesOverTCP(t *testing.T) {
	members := manyMembers(60)
	var allowed []netip.Prefix
	for i := range 80 {
		allowed = append(allowed, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24))
	}
	members[7].AllowedIPs = allowed
	ex, tcp := startExchanger(t, &Server{Zone: "mesh.", Members: func() []Member { return members }})
	got, err := List(context.Background(), ex, "mesh.")
	if err != nil {
		t.Fatal(err)
	}
	checkMembers(t, got, members)
	if n := tcp.Load(); n != 2 {
		t.Errorf("%d TCP connections, want 2 (the PTR list and member 7's SRV)", n)
	}
	ep, err := Lookup(context.Background(), ex, "mesh.", members[7].PublicKey)
	if err != nil || ep != members[7].Endpoint {
		t.Errorf("Lookup = %v, %v", ep, err)
	}
}

// stripExchanger passes queries to a Server's Answer, after edit.
type stripExchanger struct {
	s     *Server
	edit  func(q, r *dns.Msg)
	count atomic.Int32
}

func (e *stripExchanger) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	e.count.Add(1)
	r := e.s.Answer(q)
	if e.edit != nil {
		e.edit(q, r)
	}
	return r, nil
}

// TestWgsdWithoutExtras answers like an older wgsd: no TXT, NXDOMAIN for
// TXT queries and for the other address family, and (here) no additional
// section at all, so the client asks for the address itself.
func TestWgsdWithoutExtras(t *testing.T) {
	ex := &stripExchanger{
		s: &Server{Zone: "mesh.", Members: unitMembers},
		edit: func(q, r *dns.Msg) {
			r.Extra = slices.DeleteFunc(r.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
			if len(r.Answer) == 0 || q.Question[0].Qtype == dns.TypeTXT {
				r.Answer = nil
				r.Rcode = dns.RcodeNameError
			}
		},
	}
	ctx := context.Background()
	for _, m := range []Member{alpha, beta} {
		if got, err := Lookup(ctx, ex, "mesh.", m.PublicKey); err != nil || got != m.Endpoint {
			t.Errorf("Lookup(%s) = %v, %v; want %v", m.PublicKey.Short(), got, err, m.Endpoint)
		}
	}
	got, err := List(ctx, ex, "mesh.")
	if err != nil {
		t.Fatal(err)
	}
	checkMembers(t, got, []Member{
		{PublicKey: alpha.PublicKey, Endpoint: alpha.Endpoint},
		{PublicKey: beta.PublicKey, Endpoint: beta.Endpoint},
	})
}

func TestListRejectsMismatchedPub(t *testing.T) {
	ex := &stripExchanger{
		s: &Server{Zone: "mesh.", Members: unitMembers},
		edit: func(q, r *dns.Msg) {
			for _, rr := range r.Extra {
				if txt, ok := rr.(*dns.TXT); ok && strings.EqualFold(txt.Hdr.Name, InstanceName("mesh.", beta.PublicKey)) {
					txt.Txt[1] = "pub=" + testKey(42).String()
				}
			}
		},
	}
	got, err := List(context.Background(), ex, "mesh.")
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("err = %v, want a pub mismatch", err)
	}
	checkMembers(t, got, []Member{alpha})
}

func TestListSkipsBadPTRAndVanished(t *testing.T) {
	ex := &stripExchanger{
		s: &Server{Zone: "mesh.", Members: unitMembers},
		edit: func(q, r *dns.Msg) {
			switch q.Question[0].Qtype {
			case dns.TypePTR:
				hdr := r.Answer[0].Header()
				r.Answer = append(r.Answer,
					&dns.PTR{Hdr: *hdr, Ptr: "junk._wireguard._udp.mesh."},
					&dns.PTR{Hdr: *hdr, Ptr: InstanceName("mesh.", testKey(77))},                      // gone by now
					&dns.PTR{Hdr: *hdr, Ptr: strings.ToUpper(InstanceName("mesh.", alpha.PublicKey))}, // a repeat
				)
			}
		},
	}
	got, err := List(context.Background(), ex, "mesh.")
	if err == nil || !strings.Contains(err.Error(), "junk") {
		t.Errorf("err = %v, want the junk instance named", err)
	}
	checkMembers(t, got, []Member{alpha, beta})
}

// TestExchangeRetransmits drops the first UDP query and ignores replies
// with a wrong ID.
func TestExchangeRetransmits(t *testing.T) {
	s := &Server{Zone: "mesh.", Members: unitMembers}
	pc := mustListenPacket(t)
	defer pc.Close()
	go func() {
		buf := make([]byte, 65535)
		for i := 0; ; i++ {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if i == 0 {
				continue // lost
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			wrong := s.Answer(q)
			wrong.Id++
			b, _ := wrong.Pack()
			pc.WriteTo(b, from)
			b, _ = s.Answer(q).Pack()
			pc.WriteTo(b, from)
		}
	}()
	ex := DialExchanger{Addr: pc.LocalAddr().String()}
	start := time.Now()
	got, err := Lookup(context.Background(), ex, "mesh.", alpha.PublicKey)
	if err != nil || got != alpha.Endpoint {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	if d := time.Since(start); d < retransmit/2 {
		t.Errorf("answered after %v: the first query was not dropped", d)
	}
}

func TestExchangeHonoursContext(t *testing.T) {
	pc := mustListenPacket(t) // never answers
	defer pc.Close()
	ex := DialExchanger{Addr: pc.LocalAddr().String()}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Lookup(ctx, ex, "mesh.", alpha.PublicKey)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("deadline: %v after %v", err, time.Since(start))
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = List(ctx, ex, "mesh.")
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Errorf("cancel: %v after %v", err, time.Since(start))
	}

	// No deadline: Timeout applies.
	ex.Timeout = 150 * time.Millisecond
	start = time.Now()
	if _, err := Lookup(context.Background(), ex, "mesh.", alpha.PublicKey); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("timeout: %v after %v", err, time.Since(start))
	}

	// A refused dial is an error too.
	ex = DialExchanger{Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no route") }, Addr: "x:53"}
	if _, err := Lookup(context.Background(), ex, "mesh.", alpha.PublicKey); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("dial error: %v", err)
	}
}

// TestClientGoroutines checks that lookups leave nothing running.
func TestClientGoroutines(t *testing.T) {
	s := &Server{Zone: "mesh.", Members: func() []Member { return manyMembers(30) }}
	pc, ln := mustListenBoth(t)
	errs := make(chan error, 2)
	base := numGoroutines()
	go func() { errs <- s.ServePacketConn(pc) }()
	go func() { errs <- s.ServeListener(ln) }()
	ex := DialExchanger{Addr: pc.LocalAddr().String()}
	if got, err := List(context.Background(), ex, "mesh."); err != nil || len(got) != 30 {
		t.Fatalf("List: %d, %v", len(got), err)
	}
	s.Close()
	<-errs
	<-errs
	testutil.WaitGoroutines(t, base)
}
