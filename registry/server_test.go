package registry

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// testKey returns a distinct, deterministic public key.
func testKey(i int) peerbook.Key {
	return peerbook.Key(sha256.Sum256(fmt.Appendf(nil, "registry test key %d", i)))
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Members of the unit tests: alpha behind an IPv4 NAT, beta on IPv6, gamma
// not seen yet.
var (
	alpha = Member{PublicKey: testKey(1), Endpoint: netip.MustParseAddrPort("203.0.113.5:51820"),
		AllowedIPs: prefixes("10.42.0.1/32", "fd42:42::1/128", "192.168.1.0/24")}
	beta = Member{PublicKey: testKey(2), Endpoint: netip.MustParseAddrPort("[2001:db8::7]:41000"),
		AllowedIPs: prefixes("10.42.0.2/32")}
	gamma = Member{PublicKey: testKey(3), AllowedIPs: prefixes("10.42.0.3/32")}
)

func unitMembers() []Member { return []Member{alpha, beta, gamma} }

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
	return startOn(t, s, pc, ln)
}

func startOn(t *testing.T, s *Server, pc net.PacketConn, ln net.Listener) (udpAddr, tcpAddr string) {
	t.Helper()
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

func newQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func exchange(t *testing.T, network, server string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: dns.MaxMsgSize}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %v: %v", network, m.Question, err)
	}
	return r
}

func query(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return exchange(t, network, server, newQuery(name, qtype))
}

// checkAuthoritative checks the AA bit and that every record has TTL 0.
func checkAuthoritative(t *testing.T, r *dns.Msg) {
	t.Helper()
	if !r.Authoritative {
		t.Errorf("%v: AA not set", r.Question)
	}
	for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl != 0 {
				t.Errorf("%v: TTL %d: %v", r.Question, rr.Header().Ttl, rr)
			}
			if soa, ok := rr.(*dns.SOA); ok && soa.Minttl != 0 {
				t.Errorf("%v: SOA minimum TTL %d", r.Question, soa.Minttl)
			}
		}
	}
}

// checkSOA checks that the authority section is exactly the zone's SOA.
func checkSOA(t *testing.T, r *dns.Msg, zone string) {
	t.Helper()
	if len(r.Ns) != 1 {
		t.Fatalf("%v: authority %v, want the SOA", r.Question, r.Ns)
	}
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != zone {
		t.Errorf("%v: authority %v, want the SOA of %s", r.Question, r.Ns, zone)
	}
}

func TestLabel(t *testing.T) {
	k := testKey(1)
	want := strings.ToLower(base32.StdEncoding.EncodeToString(k[:]))
	if got := Label(k); got != want || len(got) != 56 || !strings.HasSuffix(got, "====") {
		t.Fatalf("Label = %q, want %q", got, want)
	}
	for _, l := range []string{want, strings.ToUpper(want)} {
		if got, err := ParseLabel(l); err != nil || got != k {
			t.Errorf("ParseLabel(%q) = %v, %v", l, got, err)
		}
	}
	// The last character before the padding carries 4 unused bits: a
	// label with them set is not canonical.
	alt := []byte(want)
	alt[51] = 'b' // "…X====" with bits that a 32-byte key never sets
	for _, bad := range []string{"", want[:55], want + "a", strings.TrimSuffix(want, "====") + "aaaa", string(alt), strings.Repeat("1", 56)} {
		if bad == want {
			continue
		}
		if _, err := ParseLabel(bad); err == nil {
			t.Errorf("ParseLabel(%q) succeeded", bad)
		}
	}
	if got := InstanceName("Mesh", k); got != want+"._wireguard._udp.mesh." {
		t.Errorf("InstanceName = %q", got)
	}
	if got := ServiceName(""); got != "_wireguard._udp.mesh." {
		t.Errorf("ServiceName(\"\") = %q", got)
	}
}

func TestPTRListing(t *testing.T) {
	udp, tcp := startServer(t, &Server{Zone: "mesh", Members: unitMembers})
	for _, srv := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
		r := query(t, srv.network, srv.addr, "_wireguard._udp.mesh.", dns.TypePTR)
		checkAuthoritative(t, r)
		var got []string
		for _, rr := range r.Answer {
			ptr := rr.(*dns.PTR)
			if ptr.Hdr.Name != "_wireguard._udp.mesh." {
				t.Errorf("PTR owner %q", ptr.Hdr.Name)
			}
			got = append(got, ptr.Ptr)
		}
		// gamma has no endpoint: not listed.
		want := []string{InstanceName("mesh.", alpha.PublicKey), InstanceName("mesh.", beta.PublicKey)}
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
			t.Errorf("%s: %s %v, want %v", srv.network, dns.RcodeToString[r.Rcode], got, want)
		}
	}
}

func TestSRVWithAdditionalHostThenTXT(t *testing.T) {
	udp, _ := startServer(t, &Server{Zone: "mesh.", Members: unitMembers})
	for _, c := range []struct {
		m    Member
		host uint16
	}{{alpha, dns.TypeA}, {beta, dns.TypeAAAA}} {
		name := InstanceName("mesh.", c.m.PublicKey)
		r := query(t, "udp", udp, name, dns.TypeSRV)
		checkAuthoritative(t, r)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || len(r.Extra) != 2 {
			t.Fatalf("%s: %v", name, r)
		}
		srv := r.Answer[0].(*dns.SRV)
		if srv.Hdr.Name != name || srv.Priority != 0 || srv.Weight != 0 || srv.Port != c.m.Endpoint.Port() || srv.Target != name {
			t.Errorf("SRV %v", srv)
		}
		host := r.Extra[0]
		if host.Header().Rrtype != c.host || host.Header().Name != name {
			t.Fatalf("first additional record %v, want %s of %s", host, dns.TypeToString[c.host], name)
		}
		var ip net.IP
		switch h := host.(type) {
		case *dns.A:
			ip = h.A
		case *dns.AAAA:
			ip = h.AAAA
		}
		if a, _ := netip.AddrFromSlice(ip); a.Unmap() != c.m.Endpoint.Addr() {
			t.Errorf("host address %v, want %v", ip, c.m.Endpoint.Addr())
		}
		txt, ok := r.Extra[1].(*dns.TXT)
		if !ok || txt.Hdr.Name != name {
			t.Fatalf("second additional record %v, want TXT", r.Extra[1])
		}
	}
}

func TestTXTStrings(t *testing.T) {
	udp, _ := startServer(t, &Server{Zone: "mesh.", Members: unitMembers})
	r := query(t, "udp", udp, InstanceName("mesh", alpha.PublicKey), dns.TypeTXT)
	checkAuthoritative(t, r)
	if len(r.Answer) != 1 {
		t.Fatalf("answer %v", r.Answer)
	}
	want := []string{
		"txtvers=1",
		"pub=" + base64Key(alpha.PublicKey),
		"allowed=10.42.0.1/32,fd42:42::1/128,192.168.1.0/24",
	}
	if got := r.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, want) {
		t.Errorf("TXT %q, want %q", got, want)
	}
	// A member without AllowedIPs still has three strings.
	s := &Server{Members: func() []Member { return []Member{{PublicKey: testKey(9), Endpoint: alpha.Endpoint}} }}
	r = s.Answer(newQuery(InstanceName("", testKey(9)), dns.TypeTXT))
	if got := r.Answer[0].(*dns.TXT).Txt; len(got) != 3 || got[2] != "allowed=" {
		t.Errorf("TXT without AllowedIPs: %q", got)
	}
}

func base64Key(k peerbook.Key) string { return k.String() }

func TestHostQueries(t *testing.T) {
	udp, _ := startServer(t, &Server{Zone: "mesh.", Members: unitMembers})
	a := InstanceName("mesh.", alpha.PublicKey)
	b := InstanceName("mesh.", beta.PublicKey)

	r := query(t, "udp", udp, a, dns.TypeA)
	checkAuthoritative(t, r)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "203.0.113.5" || r.Answer[0].Header().Name != a {
		t.Errorf("A of alpha: %v", r.Answer)
	}
	r = query(t, "udp", udp, b, dns.TypeAAAA)
	checkAuthoritative(t, r)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "2001:db8::7" {
		t.Errorf("AAAA of beta: %v", r.Answer)
	}
	// The other family: NODATA with the SOA.
	for _, c := range []struct {
		name  string
		qtype uint16
	}{{b, dns.TypeA}, {a, dns.TypeAAAA}, {a, dns.TypeMX}, {"mesh.", dns.TypeA}, {"_wireguard._udp.mesh.", dns.TypeSRV}, {"_udp.mesh.", dns.TypePTR}} {
		r := query(t, "udp", udp, c.name, c.qtype)
		checkAuthoritative(t, r)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s %s: %s %v, want NODATA", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], r.Answer)
		}
		checkSOA(t, r, "mesh.")
	}
	r = query(t, "udp", udp, "MESH.", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Hdr.Name != "MESH." {
		t.Errorf("SOA: %v", r.Answer)
	}
}

func TestCaseInsensitiveLabel(t *testing.T) {
	udp, _ := startServer(t, &Server{Zone: "Mesh.", Members: unitMembers})
	// wgsd-client asks in upper case.
	name := strings.ToUpper(Label(alpha.PublicKey)) + "._WireGuard._UDP.MESH."
	r := query(t, "udp", udp, name, dns.TypeSRV)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("%s: %v", name, r)
	}
	// The answer echoes the question; the target is the canonical name.
	srv := r.Answer[0].(*dns.SRV)
	if srv.Hdr.Name != name || srv.Target != InstanceName("mesh.", alpha.PublicKey) {
		t.Errorf("SRV %v", srv)
	}
	if r.Extra[0].Header().Name != srv.Target {
		t.Errorf("host record owner %q, want %q", r.Extra[0].Header().Name, srv.Target)
	}
}

func TestNXDOMAIN(t *testing.T) {
	udp, tcp := startServer(t, &Server{Zone: "mesh.", Members: unitMembers})
	for _, name := range []string{
		InstanceName("mesh.", testKey(99)),     // unknown key
		InstanceName("mesh.", gamma.PublicKey), // no endpoint
		"notbase32._wireguard._udp.mesh.",
		"x." + InstanceName("mesh.", alpha.PublicKey),
		Label(alpha.PublicKey) + ".mesh.",
		"alpha.mesh.",
		"_tcp.mesh.",
	} {
		for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeTXT} {
			for _, srv := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
				r := query(t, srv.network, srv.addr, name, qtype)
				if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
					t.Errorf("%s %s: %s %v, want NXDOMAIN", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], r.Answer)
				}
				checkAuthoritative(t, r)
				checkSOA(t, r, "mesh.")
			}
		}
	}
}

func TestRefusedOutsideTheZone(t *testing.T) {
	udp, _ := startServer(t, &Server{Zone: "mesh.", Members: unitMembers})
	for _, name := range []string{"example.com.", ".", "_wireguard._udp.", "mesh.example.", "xmesh.", InstanceName("other.", alpha.PublicKey)} {
		r := query(t, "udp", udp, name, dns.TypeSRV)
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || r.Authoritative {
			t.Errorf("%s: %s AA=%v %v, want REFUSED", name, dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
		}
	}
}

// manyMembers returns n members with IPv4 endpoints.
func manyMembers(n int) []Member {
	var out []Member
	for i := range n {
		out = append(out, Member{
			PublicKey:  testKey(1000 + i),
			Endpoint:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(40000+i)),
			AllowedIPs: prefixes(fmt.Sprintf("10.42.1.%d/32", i)),
		})
	}
	return out
}

func TestTruncation(t *testing.T) {
	members := manyMembers(40)
	udp, tcp := startServer(t, &Server{Zone: "mesh.", Members: func() []Member { return members }})
	service := ServiceName("mesh.")

	// No EDNS: at most 512 bytes, TC set, no OPT.
	r := query(t, "udp", udp, service, dns.TypePTR)
	r.Compress = true // as sent
	if !r.Truncated || r.Len() > dns.MinMsgSize || len(r.Answer) == 0 || len(r.Answer) >= 40 || r.IsEdns0() != nil {
		t.Errorf("UDP: TC=%v len=%d answers=%d OPT=%v", r.Truncated, r.Len(), len(r.Answer), r.IsEdns0())
	}
	// TCP: everything.
	r = query(t, "tcp", tcp, service, dns.TypePTR)
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	// EDNS0: the client's size, capped at 1232, echoed in the OPT.
	prev := 0
	for _, c := range []struct{ asked, limit uint16 }{{512, 512}, {900, 900}, {4096, 1232}, {100, 512}} {
		m := newQuery(service, dns.TypePTR)
		m.SetEdns0(c.asked, false)
		r := exchange(t, "udp", udp, m)
		opt := r.IsEdns0()
		if opt == nil || opt.UDPSize() != 1232 {
			t.Errorf("EDNS %d: OPT %v, want size 1232", c.asked, opt)
		}
		r.Compress = true
		if !r.Truncated || r.Len() > int(c.limit) {
			t.Errorf("EDNS %d: TC=%v len=%d, limit %d", c.asked, r.Truncated, r.Len(), c.limit)
		}
		if c.asked == 900 && len(r.Answer) <= prev {
			t.Errorf("EDNS 900: %d answers, no more than %d at 512 bytes", len(r.Answer), prev)
		}
		prev = len(r.Answer)
	}
	// A reply that fits is not truncated.
	m := newQuery(InstanceName("mesh.", members[0].PublicKey), dns.TypeSRV)
	m.SetEdns0(1232, false)
	if r := exchange(t, "udp", udp, m); r.Truncated || len(r.Extra) != 3 {
		t.Errorf("small SRV reply: TC=%v extra=%v", r.Truncated, r.Extra)
	}
}

func TestLongAllowedListSplits(t *testing.T) {
	var allowed []netip.Prefix
	for i := range 40 {
		allowed = append(allowed, netip.MustParsePrefix(fmt.Sprintf("fd42:42::%x/128", 0x1000+i)))
	}
	mb := &Member{PublicKey: testKey(5), Endpoint: alpha.Endpoint, AllowedIPs: allowed}
	txt := txtRecord("x.", mb).Txt
	if txt[0] != "txtvers=1" || txt[1] != "pub="+mb.PublicKey.String() || len(txt) < 4 {
		t.Fatalf("TXT %q", txt)
	}
	var joined []string
	for _, s := range txt[2:] {
		if len(s) > 255 || !strings.HasPrefix(s, "allowed=") {
			t.Errorf("string of %d bytes: %q", len(s), s)
		}
		joined = append(joined, strings.TrimPrefix(s, "allowed="))
	}
	var want []string
	for _, p := range allowed {
		want = append(want, p.String())
	}
	if got := strings.Join(joined, ","); got != strings.Join(want, ",") {
		t.Errorf("allowed lists %q, want %q", got, want)
	}
	// It packs.
	s := &Server{Members: func() []Member { return []Member{*mb} }}
	if _, err := s.Answer(newQuery(InstanceName("", mb.PublicKey), dns.TypeTXT)).Pack(); err != nil {
		t.Error(err)
	}
}

func TestMalformedQueries(t *testing.T) {
	s := &Server{Zone: "mesh.", Members: unitMembers}
	q := func(edit func(*dns.Msg)) *dns.Msg {
		m := newQuery(InstanceName("mesh.", alpha.PublicKey), dns.TypeSRV)
		edit(m)
		return s.Answer(m)
	}
	if r := q(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question = nil }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }); r.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.SetEdns0(4096, false); m.IsEdns0().SetVersion(1) }); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s", dns.RcodeToString[r.Rcode])
	}
	if r := (&Server{}).Answer(newQuery("mesh.", dns.TypeSOA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("no Members: %s", dns.RcodeToString[r.Rcode])
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeANY }); len(r.Answer) != 3 {
		t.Errorf("ANY: %v", r.Answer)
	}
	if err := (&Server{}).ServePacketConn(mustListenPacket(t)); err == nil {
		t.Error("serving without Members succeeded")
	}
}

// mustListenBoth binds UDP and TCP on one loopback port, as a DNS server
// does. The UDP port is chosen by the system; its TCP twin may belong to
// someone else, so on a clash it tries another port (a bounded number of
// times).
func mustListenBoth(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 50 {
		pc := mustListenPacket(t)
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}

func mustListenPacket(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// TestGarbageNeverPanics throws random and mutated packets at the server
// and at Answer; the server must keep answering.
func TestGarbageNeverPanics(t *testing.T) {
	s := &Server{Zone: "mesh.", Members: unitMembers}
	udp, tcp := startServer(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	valid, err := newQuery(InstanceName("mesh.", alpha.PublicKey), dns.TypeSRV).Pack()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 2000 {
		var pkt []byte
		if i%2 == 0 {
			pkt = make([]byte, rng.IntN(600))
			for j := range pkt {
				pkt[j] = byte(rng.Uint32())
			}
		} else {
			pkt = slices.Clone(valid)
			for range 1 + rng.IntN(6) {
				pkt[rng.IntN(len(pkt))] = byte(rng.Uint32())
			}
			pkt = pkt[:rng.IntN(len(pkt)+1)]
		}
		answerBytes(pkt, s)
		if i%10 == 0 {
			conn.Write(pkt)
		}
	}
	// Garbage over TCP, then a closed connection half-way through a length.
	if c, err := net.Dial("tcp", tcp); err == nil {
		c.Write([]byte{0x01, 0x00, 0xde, 0xad})
		c.Close()
	}
	// The flood may overflow the socket's receive buffer on a loaded
	// machine, and the kernel then drops a datagram: retry as resolvers do.
	var r *dns.Msg
	for try := 1; ; try++ {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, UDPSize: dns.MaxMsgSize}
		r, _, err = c.Exchange(newQuery(InstanceName("mesh.", alpha.PublicKey), dns.TypeSRV), udp)
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatalf("no answer after garbage: %v", err)
		}
	}
	if len(r.Answer) != 1 {
		t.Errorf("after garbage: %v", r)
	}
	query(t, "tcp", tcp, "mesh.", dns.TypeSOA)
}

// answerBytes runs Answer, Truncate and Pack on a packet, as ServeDNS does.
func answerBytes(pkt []byte, s *Server) {
	m := new(dns.Msg)
	if m.Unpack(pkt) != nil {
		return
	}
	r := s.Answer(m)
	r.Truncate(dns.MinMsgSize)
	r.Pack()
}

func FuzzAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{
		newQuery(InstanceName("mesh.", alpha.PublicKey), dns.TypeSRV),
		newQuery(ServiceName("mesh."), dns.TypePTR),
		newQuery("mesh.", dns.TypeSOA),
	} {
		b, _ := q.Pack()
		f.Add(b)
	}
	s := &Server{Zone: "mesh.", Members: func() []Member { return append(unitMembers(), manyMembers(20)...) }}
	f.Fuzz(func(t *testing.T, pkt []byte) { answerBytes(pkt, s) })
}

func TestCloseStopsServing(t *testing.T) {
	base := runtime.NumGoroutine()
	s := &Server{Zone: "mesh.", Members: unitMembers}
	pc := mustListenPacket(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.ServePacketConn(pc) }()
	go func() { errs <- s.ServeListener(ln) }()
	query(t, "udp", pc.LocalAddr().String(), "mesh.", dns.TypeSOA)
	// An idle TCP client holding a connection open.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	query(t, "tcp", ln.Addr().String(), "mesh.", dns.TypeSOA)
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
	if err := s.ServePacketConn(mustListenPacket(t)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("serve after Close: %v", err)
	}
	idle.Close()
	testutil.WaitGoroutines(t, base)
}

func numGoroutines() int { return runtime.NumGoroutine() }
