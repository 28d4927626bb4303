package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

// testDNS is an authoritative DNS server on 127.0.0.1 whose A records the
// test changes as members move.
type testDNS struct {
	mu      sync.Mutex
	records map[string]netip.Addr
	addr    string
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{records: map[string]netip.Addr{}, addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: d}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

func (d *testDNS) set(name string, a netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[dns.Fqdn(name)] = a
}

func (d *testDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	d.mu.Lock()
	a, ok := d.records[r.Question[0].Name]
	d.mu.Unlock()
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case r.Question[0].Qtype == dns.TypeA && a.Is4():
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: a.AsSlice()})
	}
	w.WriteMsg(m)
}

func (d *testDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", d.addr)
	}}
}

// deviceEndpoint reads the device's endpoint for k afresh. n.dev changes
// only when the node closes.
func (n *Node) deviceEndpoint(k peerbook.Key) netip.AddrPort {
	st, err := n.readDevice()
	if err != nil {
		return netip.AddrPort{}
	}
	if p, ok := st.peers[k]; ok {
		return p.endpoint
	}
	return netip.AddrPort{}
}

func TestDDNSEndpoints(t *testing.T) {
	d := newTestDNS(t)
	book, keys := testBook(t, 3)
	const interval = 200 * time.Millisecond
	nodes := startNodes(t, book, keys, func(_ int, c *Config) {
		c.Resolver, c.ResolveInterval = d.resolver(), interval
	}, nil)
	alpha, beta, gamma := nodes[0], nodes[1], nodes[2]
	final := *boundBook(book, nodes)
	for i := range final.Peers {
		final.Peers[i].Endpoint.Host = []string{"127.0.0.1", "beta.test", "gamma.test"}[i]
	}
	d.set("beta.test", netip.MustParseAddr("127.0.0.1"))
	// gamma.test does not resolve yet: the rest must come up regardless.
	for _, n := range nodes {
		if err := n.Reload(context.Background(), &final); err != nil {
			t.Fatal(err)
		}
	}
	serveEcho(t, beta, "n1")
	serveEcho(t, gamma, "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkTCP(ctx, alpha, "n1"); err != nil {
		t.Fatalf("alpha -> beta while gamma does not resolve: %v", err)
	}
	gammaKey, betaKey := keys[2].Public(), keys[1].Public()
	// What alpha configured, not the device's endpoint: gamma knows
	// alpha's address and may greet it first, and the device then roams
	// to where gamma sends from, as WireGuard should.
	var configured netip.AddrPort
	alpha.do(func() { configured = alpha.applied[gammaKey].endpoint })
	if configured.IsValid() {
		t.Fatalf("gamma has endpoint %v before its name resolves", configured)
	}

	// The name appears: alpha retries with back-off and finds gamma.
	d.set("gamma.test", netip.MustParseAddr("127.0.0.1"))
	waitEndpoint(t, alpha, gammaKey, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), final.Peers[2].Endpoint.Port), 5*time.Second)
	if err := checkTCP(ctx, alpha, "n2"); err != nil {
		t.Fatalf("alpha -> gamma after its name resolved: %v", err)
	}

	// beta's record changes while its session works: the working endpoint
	// is kept, not replaced by the DNS answer.
	betaPort := final.Peers[1].Endpoint.Port
	d.set("beta.test", netip.MustParseAddr("127.0.0.2"))
	time.Sleep(5 * interval)
	if ep := alpha.deviceEndpoint(betaKey); ep.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("working endpoint replaced by DNS: %v", ep)
	}

	// Once the session counts as broken, the new address is applied.
	alpha.do(func() { alpha.staleAfter = time.Nanosecond })
	waitEndpoint(t, alpha, betaKey, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), betaPort), 5*time.Second)
	if got := alpha.Status(); got.Peers[0].EndpointChanges == 0 {
		t.Errorf("endpoint change not counted: %+v", got.Peers[0])
	}
	if err := checkTCP(ctx, alpha, "n1"); err != nil {
		t.Fatalf("alpha -> beta at its new address: %v", err)
	}
}

func waitEndpoint(t *testing.T, n *Node, k peerbook.Key, want netip.AddrPort, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ep := n.deviceEndpoint(k)
		if ep == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint of %s is %v, want %v within %v", k.Short(), ep, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnresolvableMemberDoesNotBlockUp starts a node whose book names a
// member by a hostname that never resolves.
func TestUnresolvableMemberDoesNotBlockUp(t *testing.T) {
	d := newTestDNS(t)
	book, keys := testBook(t, 2)
	book.Peers[1].Endpoint = peerbook.Endpoint{Host: "nowhere.test", Port: 51820}
	n, err := New(Config{Book: book, PrivateKey: keys[0], ListenPort: EphemeralPort, Resolver: d.resolver()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if time.Since(start) > 3*time.Second {
		t.Errorf("Up took %v with an unresolvable member", time.Since(start))
	}
	if st := n.Status(); st.Peers[0].Endpoint != "" {
		t.Errorf("unresolvable member has endpoint %q", st.Peers[0].Endpoint)
	}
}

// stuckResolver answers no lookup until release is called, whatever the
// context says: a resolver that does not answer at all. entered receives
// once per lookup that started.
type stuckResolver struct {
	entered chan string
	unblock chan struct{}
	once    sync.Once
	addr    netip.Addr
}

func newStuckResolver(addr netip.Addr) *stuckResolver {
	return &stuckResolver{entered: make(chan string, 1024), unblock: make(chan struct{}), addr: addr}
}

func (r *stuckResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.entered <- host
	<-r.unblock
	return []netip.Addr{r.addr}, nil
}

func (r *stuckResolver) release() { r.once.Do(func() { close(r.unblock) }) }

// TestReloadResolvesWithoutLock: while a reload that adds 64 hostname
// members waits for a resolver that does not answer, Status, Book, member
// lookups and a dial through the mesh to an existing member still answer
// (before, they waited for the whole reload: `wgmesh status` timed out and
// a SOCKS CONNECT took 19 s). Once the names resolve, the reload applies.
func TestReloadResolvesWithoutLock(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	holePort := netip.MustParseAddrPort(hole.LocalAddr().String()).Port()

	res := newStuckResolver(netip.MustParseAddr("127.0.0.1"))
	t.Cleanup(res.release)
	book, keys := testBook(t, 2)
	nodes := startNodes(t, book, keys, func(i int, c *Config) {
		if i == 0 {
			c.Resolver = res
		}
	}, nil)
	final := boundBook(book, nodes)
	for _, n := range nodes {
		if err := n.Reload(context.Background(), final); err != nil {
			t.Fatal(err)
		}
	}
	a := nodes[0]
	serveEcho(t, nodes[1], "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkTCP(ctx, a, "n1"); err != nil {
		t.Fatal(err)
	}

	grown := withHostnameMembers(t, final, 64, holePort)
	reloaded := make(chan error, 1)
	go func() { reloaded <- a.Reload(context.Background(), grown) }()
	select {
	case <-res.entered:
	case err := <-reloaded:
		t.Fatalf("reload returned before resolving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the reload never asked the resolver")
	}

	// The resolver is stuck now, until release.
	answered := make(chan string, 1)
	go func() {
		st := a.Status()
		serial := a.Book().Serial
		_, err := a.ResolveMember("tcp", "n1")
		if err == nil {
			err = checkTCP(ctx, a, "n1")
		}
		answered <- fmt.Sprintf("status serial %d, book serial %d, %d peers, n1: %v", st.BookSerial, serial, len(st.Peers), err)
	}()
	select {
	case got := <-answered:
		if want := fmt.Sprintf("status serial %d, book serial %d, 1 peers, n1: <nil>", final.Serial, final.Serial); got != want {
			t.Errorf("during the reload: %s; want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		res.release()
		t.Fatal("Status, Book, ResolveMember and Dial waited for the reload's stuck lookups")
	}

	res.release()
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if st.BookSerial != grown.Serial || len(st.Peers) != 65 {
		t.Fatalf("after the reload: serial %d, %d peers", st.BookSerial, len(st.Peers))
	}
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), holePort).String()
	for _, p := range st.Peers[1:] {
		if p.Endpoint != want {
			t.Errorf("%s: endpoint %q, want %q", p.Name, p.Endpoint, want)
		}
	}
}

// withHostnameMembers returns b with serial + 1 and n more members,
// h0 to h(n-1), whose endpoints are the names hI.test on port.
func withHostnameMembers(t *testing.T, b *peerbook.Book, n int, port uint16) *peerbook.Book {
	t.Helper()
	grown := *b
	grown.Serial++
	grown.Peers = append([]peerbook.Peer(nil), b.Peers...)
	for i := range n {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		grown.Peers = append(grown.Peers, peerbook.Peer{
			Name:      fmt.Sprintf("h%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 2, byte(i + 1)})},
			Endpoint:  peerbook.Endpoint{Host: fmt.Sprintf("h%d.test", i), Port: port},
		})
	}
	return &grown
}

// waitingResolver answers no lookup; each waits for its context to end.
type waitingResolver struct{ entered chan string }

func (r waitingResolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	r.entered <- host
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCloseEndsReloadLookups: Close during a reload that waits for a
// resolver ends the lookups, and the reload returns net.ErrClosed at once
// instead of after every lookup's timeout (4 rounds of 5 s for 64 names).
func TestCloseEndsReloadLookups(t *testing.T) {
	res := waitingResolver{entered: make(chan string, 1024)}
	book, keys := testBook(t, 1)
	n := startNodes(t, book, keys, func(_ int, c *Config) { c.Resolver = res }, nil)[0]
	grown := withHostnameMembers(t, book, 64, 9)
	reloaded := make(chan error, 1)
	go func() { reloaded <- n.Reload(context.Background(), grown) }()
	select {
	case <-res.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload never asked the resolver")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reloaded:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("reload after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reload went on resolving after Close")
	}
}

// TestResolvedEndpointInSubnetRefused: a hostname endpoint that resolves
// into a member's subnet is not used, at a reload and at a re-resolution;
// the book's literal endpoints get the same check from the validator.
func TestResolvedEndpointInSubnetRefused(t *testing.T) {
	d := newTestDNS(t)
	book, keys := testBook(t, 2)
	const interval = 100 * time.Millisecond
	nodes := startNodes(t, book, keys, func(_ int, c *Config) {
		c.Resolver, c.ResolveInterval = d.resolver(), interval
	}, nil)
	alpha := nodes[0]
	final := *boundBook(book, nodes)
	final.Peers = slices.Clone(final.Peers)
	final.Peers[1].Endpoint.Host = "beta.test"
	final.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}
	betaKey := keys[1].Public()
	betaPort := final.Peers[1].Endpoint.Port

	d.set("beta.test", netip.MustParseAddr("10.99.0.5"))
	if err := alpha.Reload(context.Background(), &final); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * interval) // several re-resolutions of the same answer
	if ep := alpha.deviceEndpoint(betaKey); ep.IsValid() {
		t.Fatalf("endpoint %v inside beta's subnet was applied", ep)
	}

	d.set("beta.test", netip.MustParseAddr("127.0.0.1"))
	good := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), betaPort)
	waitEndpoint(t, alpha, betaKey, good, 5*time.Second)

	// A later answer inside the subnet, with the session counted as
	// broken so that a good answer would be applied: the endpoint stays.
	alpha.do(func() { alpha.staleAfter = time.Nanosecond })
	d.set("beta.test", netip.MustParseAddr("10.99.0.6"))
	time.Sleep(10 * interval)
	if ep := alpha.deviceEndpoint(betaKey); ep != good {
		t.Fatalf("endpoint %v after an answer inside beta's subnet, want %v kept", ep, good)
	}
}
