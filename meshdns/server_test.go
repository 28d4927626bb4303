package meshdns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/dnsserve"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

func unitBook() *peerbook.Book {
	return &peerbook.Book{
		Format: 1,
		Serial: 7,
		Mesh: peerbook.Mesh{
			Domain:   "mesh",
			Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
		},
		Peers: []peerbook.Peer{
			{Name: "alpha", Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1"), netip.MustParseAddr("fd42:42::1")}},
			{Name: "Beta", Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.2"), netip.MustParseAddr("fd42:42::2")},
				Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}},
			{Name: "v4only", Addresses: []netip.Addr{netip.MustParseAddr("10.42.1.3")}},
		},
	}
}

// startServer serves s on 127.0.0.1 over UDP and TCP (different ports)
// and returns the addresses.
func startServer(t *testing.T, s *Server) (udpAddr, tcpAddr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.ServePacketConn(pc) }()
	go func() { errs <- s.ServeListener(ln) }()
	t.Cleanup(func() {
		s.Close()
		for range 2 {
			select {
			case err := <-errs:
				// A short test may close before a goroutine has begun to
				// serve; serving after Close is refused with ErrClosed.
				if err != nil && !errors.Is(err, net.ErrClosed) {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("serve did not return after Close")
			}
		}
	})
	return pc.LocalAddr().String(), ln.Addr().String()
}

func query(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

// answers returns the answer records' data, sorted.
func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.PTR:
			out = append(out, rr.Ptr)
		case *dns.SOA:
			out = append(out, "SOA "+rr.Hdr.Name)
		}
	}
	slices.Sort(out)
	return out
}

// hasSOA reports whether the authority section holds zone's SOA.
func hasSOA(r *dns.Msg, zone string) bool {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, zone) {
			return true
		}
	}
	return false
}

func TestMemberNames(t *testing.T) {
	book := unitBook()
	udp, tcp := startServer(t, &Server{Book: func() *peerbook.Book { return book }})
	for _, server := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
		for _, p := range book.Peers {
			var want4, want6 []string
			for _, a := range p.Addresses {
				if a.Is4() {
					want4 = append(want4, a.String())
				} else {
					want6 = append(want6, a.String())
				}
			}
			names := []string{p.Name + ".", p.Name + ".mesh.", strings.ToUpper(p.Name) + ".MeSh.", strings.ToLower(p.Name) + ".mesh."}
			for _, name := range names {
				for qtype, want := range map[uint16][]string{dns.TypeA: want4, dns.TypeAAAA: want6} {
					r := query(t, server.network, server.addr, name, qtype)
					got := answers(r)
					if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.RecursionAvailable || !slices.Equal(got, want) {
						t.Errorf("%s %s %s: rcode %s aa=%v ra=%v answers %v, want %v",
							server.network, name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable, got, want)
					}
					for _, rr := range r.Answer {
						if rr.Header().Name != name || rr.Header().Ttl != DefaultTTL {
							t.Errorf("%s: record %v: want owner %q (as asked) and TTL %d", name, rr, name, DefaultTTL)
						}
					}
					if len(want) == 0 && !hasSOA(r, "mesh.") {
						t.Errorf("%s %s: NODATA without SOA: %v", name, dns.TypeToString[qtype], r)
					}
				}
			}
		}
	}
}

func TestNegativeAnswers(t *testing.T) {
	book := unitBook()
	udp, _ := startServer(t, &Server{Book: func() *peerbook.Book { return book }})
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		soa   string // zone whose SOA must be in the authority section
	}{
		{"delta.mesh.", dns.TypeA, dns.RcodeNameError, "mesh."},
		{"DELTA.MESH.", dns.TypeAAAA, dns.RcodeNameError, "mesh."},
		{"x.alpha.mesh.", dns.TypeA, dns.RcodeNameError, "mesh."},
		{"alpha.mesh.", dns.TypeMX, dns.RcodeSuccess, "mesh."}, // NODATA
		{"mesh.", dns.TypeA, dns.RcodeSuccess, "mesh."},
		{"9.0.42.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, "42.10.in-addr.arpa."},
		{"0.42.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "42.10.in-addr.arpa."}, // above alpha
		{"9.9.42.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, "42.10.in-addr.arpa."},
		{"9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.2.4.d.f.ip6.arpa.", dns.TypePTR, dns.RcodeNameError, "0.0.0.0.0.0.0.0.2.4.0.0.2.4.d.f.ip6.arpa."},
		{"example.com.", dns.TypeA, dns.RcodeRefused, ""},
		{"alpha.example.com.", dns.TypeA, dns.RcodeRefused, ""},
		{"com.", dns.TypeA, dns.RcodeRefused, ""},
		{"1.1.168.192.in-addr.arpa.", dns.TypePTR, dns.RcodeRefused, ""}, // a subnet, not the mesh
		{"1.0.0.127.in-addr.arpa.", dns.TypePTR, dns.RcodeRefused, ""},
	} {
		r := query(t, "udp", udp, tc.name, tc.qtype)
		if r.Rcode != tc.rcode || len(r.Answer) != 0 {
			t.Errorf("%s %s: rcode %s answers %v, want %s and none", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], r.Answer, dns.RcodeToString[tc.rcode])
		}
		if tc.soa != "" && (!hasSOA(r, tc.soa) || !r.Authoritative) {
			t.Errorf("%s: want authoritative with the SOA of %s, got aa=%v ns=%v", tc.name, tc.soa, r.Authoritative, r.Ns)
		}
		if tc.soa == "" && (len(r.Ns) != 0 || r.Authoritative) {
			t.Errorf("%s: REFUSED should carry no authority: aa=%v ns=%v", tc.name, r.Authoritative, r.Ns)
		}
	}
	r := query(t, "udp", udp, "mesh.", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 7 || r.Answer[0].(*dns.SOA).Minttl != DefaultTTL {
		t.Errorf("SOA of mesh.: %v", r.Answer)
	}
}

func TestPTR(t *testing.T) {
	book := unitBook()
	udp, tcp := startServer(t, &Server{Book: func() *peerbook.Book { return book }})
	for _, p := range book.Peers {
		for _, a := range p.Addresses {
			rev, err := dns.ReverseAddr(a.String())
			if err != nil {
				t.Fatal(err)
			}
			for _, server := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
				for _, name := range []string{rev, strings.ToUpper(rev)} {
					r := query(t, server.network, server.addr, name, dns.TypePTR)
					want := []string{strings.ToLower(p.Name) + ".mesh."}
					if got := answers(r); r.Rcode != dns.RcodeSuccess || !r.Authoritative || !slices.Equal(got, want) {
						t.Errorf("PTR %s: %s %v, want %v", name, dns.RcodeToString[r.Rcode], got, want)
					}
				}
			}
		}
	}
}

func TestAnswersFollowTheBook(t *testing.T) {
	var current atomic.Pointer[peerbook.Book]
	current.Store(unitBook())
	udp, _ := startServer(t, &Server{Book: current.Load})
	if got := answers(query(t, "udp", udp, "gamma.mesh.", dns.TypeA)); len(got) != 0 {
		t.Fatalf("gamma before reload: %v", got)
	}
	next := unitBook()
	next.Serial++
	next.Mesh.Domain = "corp"
	next.Peers[1].Addresses = []netip.Addr{netip.MustParseAddr("10.42.0.20")}
	next.Peers = append(next.Peers, peerbook.Peer{Name: "gamma", Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.3")}})
	current.Store(next)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"gamma.corp.", dns.TypeA, dns.RcodeSuccess, []string{"10.42.0.3"}},
		{"beta.corp.", dns.TypeA, dns.RcodeSuccess, []string{"10.42.0.20"}},
		{"beta.corp.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"beta.mesh.", dns.TypeA, dns.RcodeRefused, nil}, // the old domain
		{"20.0.42.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"beta.corp."}},
		{"2.0.42.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil},
	} {
		r := query(t, "udp", udp, tc.name, tc.qtype)
		if got := answers(r); r.Rcode != tc.rcode || !slices.Equal(got, tc.want) {
			t.Errorf("after reload, %s %s: %s %v, want %s %v", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
		}
	}
	r := query(t, "udp", udp, "corp.", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 8 {
		t.Errorf("SOA serial after reload: %v", r.Answer)
	}
}

func TestMalformedQueries(t *testing.T) {
	book := unitBook()
	s := &Server{Book: func() *peerbook.Book { return book }}
	q := func(edit func(*dns.Msg)) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("alpha.mesh.", dns.TypeA)
		edit(m)
		return s.Answer(m, book)
	}
	if r := q(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }); r.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %s", dns.RcodeToString[r.Rcode])
	}
	if r := s.Answer(new(dns.Msg).SetQuestion("alpha.mesh.", dns.TypeA), nil); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("no book: %s", dns.RcodeToString[r.Rcode])
	}
	r := q(func(m *dns.Msg) { m.SetEdns0(4096, false) })
	if r.Rcode != dns.RcodeSuccess || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != dnsserve.EDNSSize {
		t.Errorf("EDNS: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.SetQuestion("alpha.mesh.", dns.TypeANY) }); len(answers(r)) != 2 {
		t.Errorf("ANY: %v", answers(r))
	}
}

func TestLargeAnswerTruncatesOverUDP(t *testing.T) {
	book := unitBook()
	// A member with enough addresses to exceed 512 bytes.
	var many []netip.Addr
	for i := range 60 {
		many = append(many, netip.MustParseAddr(fmt.Sprintf("fd42:42::1:%x", i)))
	}
	book.Peers = append(book.Peers, peerbook.Peer{Name: "big", Addresses: many})
	udp, tcp := startServer(t, &Server{Book: func() *peerbook.Book { return book }})
	r := query(t, "udp", udp, "big.mesh.", dns.TypeAAAA)
	r.Compress = true // as sent
	if !r.Truncated || r.Len() > dns.MinMsgSize {
		t.Errorf("UDP: truncated=%v len=%d", r.Truncated, r.Len())
	}
	if r := query(t, "tcp", tcp, "big.mesh.", dns.TypeAAAA); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
}

func TestCloseStopsServing(t *testing.T) {
	base := runtime.NumGoroutine()
	book := unitBook()
	s := &Server{Book: func() *peerbook.Book { return book }}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.ServePacketConn(pc) }()
	go func() { errs <- s.ServeListener(ln) }()
	query(t, "udp", pc.LocalAddr().String(), "alpha.mesh.", dns.TypeA)
	// An idle TCP client holding a connection open.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	query(t, "tcp", ln.Addr().String(), "alpha.mesh.", dns.TypeA)
	// Close races neither with a server that is starting nor with one
	// that is serving.
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	pc2, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServePacketConn(pc2); !errors.Is(err, net.ErrClosed) {
		t.Errorf("serve after Close: %v", err)
	}
	idle.Close()
	testutil.WaitGoroutines(t, base)
}
