package node

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/registry"
)

// TestExternalRegistry: n1 has no endpoint in the book; n0 learns it from
// a registry outside the mesh (as CoreDNS with the wgsd plugin would
// serve it, here a registry.Server on loopback) and reaches n1. The nodes
// run on an in-memory network and fake clocks: the first lookup is due one
// discoverTick after start-up, and not before.
func TestExternalRegistry(t *testing.T) {
	book, keys := testBook(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var n1Endpoint atomic.Pointer[netip.AddrPort]
	srv := &registry.Server{Zone: "example.net.", Members: func() []registry.Member {
		ep := n1Endpoint.Load()
		if ep == nil {
			return nil
		}
		return []registry.Member{{PublicKey: keys[1].Public(), Endpoint: *ep, AllowedIPs: book.Peers[1].AllowedIPs()}}
	}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServePacketConn(pc)
	defer srv.Close()

	m := startFakeNodes(t, book, keys, func(i int, c *Config) {
		if i == 0 {
			c.Registry, c.RegistryZone = pc.LocalAddr().String(), "example.net"
		}
	}, nil)
	n0, n1 := m.nodes[0], m.nodes[1]
	ep := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n1.Status().ListenPort)
	n1Endpoint.Store(&ep)

	m.advance(t, discoverTick-time.Millisecond, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	if got := n0.deviceEndpoint(keys[1].Public()); got.IsValid() {
		t.Fatalf("n0 has n1's endpoint %v before its first lookup was due", got)
	}
	m.advance(t, time.Millisecond, time.Millisecond)
	waitEndpoint(t, n0, keys[1].Public(), ep, 10*time.Second)
	serveEcho(t, n1, "n1")
	if err := checkTCP(ctx, n0, "n1"); err != nil {
		t.Fatalf("n0 -> n1 through the registry's endpoint: %v", err)
	}
	for _, p := range n0.Status().Peers {
		if p.Name == "n1" && (p.EndpointSource != "registry" || p.Path != PathDirect) {
			t.Errorf("n1: source %q path %q", p.EndpointSource, p.Path)
		}
	}
}

// TestRegistryMemberInMesh: n0 is a registry member answering on mesh
// port 5354 (Config.RegistryPort, --registry-listen) in netstack mode; n1
// and n2 have no endpoints in the book, learn each other's from n0 through
// the mesh, and then talk directly.
func TestRegistryMemberInMesh(t *testing.T) {
	book, keys := testBook(t, 3)
	book.Peers[0].Registry = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := startNodes(t, book, keys, func(_ int, c *Config) { c.RegistryPort = 5354 }, nil)
	// Only the registry's endpoint is published.
	final := boundBook(book, nodes[:1])
	for _, n := range nodes {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	serveEcho(t, nodes[0], "n0")
	serveEcho(t, nodes[2], "n2")
	// n1 and n2 reach the registry (and so it observes them)...
	for _, i := range []int{1, 2} {
		if err := checkTCP(ctx, nodes[i], "n0"); err != nil {
			t.Fatal(err)
		}
	}
	// ... and each other, directly, with endpoints from the registry.
	n2Endpoint := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), nodes[2].Status().ListenPort)
	waitEndpoint(t, nodes[1], keys[2].Public(), n2Endpoint, 10*time.Second)
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2: %v", err)
	}
	// Whichever of the two sent the first handshake took the other's
	// endpoint from the registry; the other may show it as "roaming" (it
	// followed the packets) until its own next lookup, a minute later.
	sources := map[string]bool{}
	for _, v := range []struct {
		n    *Node
		peer string
	}{{nodes[1], "n2"}, {nodes[2], "n1"}} {
		for _, p := range v.n.Status().Peers {
			if p.Name != v.peer {
				continue
			}
			if p.Path != PathDirect || (p.EndpointSource != "registry" && p.EndpointSource != "roaming") {
				t.Errorf("%s's %s: path %q, source %q", v.n.Status().Name, v.peer, p.Path, p.EndpointSource)
			}
			sources[p.EndpointSource] = true
		}
	}
	if !sources["registry"] {
		t.Errorf("neither n1 nor n2 took the other's endpoint from the registry: %v", sources)
	}
}

// outageRegistry is a registry on loopback that stops answering when down
// is set, as a registry host that went away would. It counts the queries
// that reached it by message ID, so that the retransmits within one lookup
// count once.
type outageRegistry struct {
	srv  *registry.Server
	down atomic.Bool
	mu   sync.Mutex
	ids  map[uint16]bool
}

func (r *outageRegistry) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	r.mu.Lock()
	r.ids[req.Id] = true
	r.mu.Unlock()
	if r.down.Load() {
		return // no answer: the asker times out
	}
	r.srv.ServeDNS(w, req)
}

func (r *outageRegistry) queries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// TestRegistryOutageKeepsDirectPath: n0 learnt n1's endpoint from a
// registry and reaches it directly. The registry stops answering; n0 goes
// on looking n1 up, once a minute of fake time, and each lookup fails, but
// the endpoint and the direct path stay.
func TestRegistryOutageKeepsDirectPath(t *testing.T) {
	book, keys := testBook(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var n1Endpoint atomic.Pointer[netip.AddrPort]
	reg := &outageRegistry{ids: map[uint16]bool{}, srv: &registry.Server{Zone: "example.net.", Members: func() []registry.Member {
		ep := n1Endpoint.Load()
		if ep == nil {
			return nil
		}
		return []registry.Member{{PublicKey: keys[1].Public(), Endpoint: *ep, AllowedIPs: book.Peers[1].AllowedIPs()}}
	}}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: reg}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	m := startFakeNodes(t, book, keys, func(i int, c *Config) {
		if i == 0 {
			c.Registry, c.RegistryZone = pc.LocalAddr().String(), "example.net"
		}
	}, nil)
	n0, n1 := m.nodes[0], m.nodes[1]
	ep := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n1.Status().ListenPort)
	n1Endpoint.Store(&ep)
	m.advance(t, discoverTick, pathTick)
	waitEndpoint(t, n0, keys[1].Public(), ep, 10*time.Second)
	serveEcho(t, n1, "n1")
	if err := checkTCP(ctx, n0, "n1"); err != nil {
		t.Fatalf("n0 -> n1 through the registry's endpoint: %v", err)
	}
	// The next lookups of a member reached directly are a minute apart.
	m.advance(t, discoverUnreachable, pathTick)
	time.Sleep(discoverTimeout)
	asked := reg.queries()
	m.advance(t, discoverReachable-2*pathTick, pathTick)
	time.Sleep(200 * time.Millisecond)
	if q := reg.queries(); q != asked {
		t.Fatalf("n0 asked the registry %d times within a minute of a lookup of a member reached directly", q-asked)
	}

	reg.down.Store(true)
	// Two lookups fail: each times out (discoverTimeout, in real time: the
	// worker's own) and the next is a minute of fake time later.
	for i := 1; i <= 2; i++ {
		m.advance(t, discoverReachable, pathTick)
		deadline := time.Now().Add(5 * time.Second)
		for reg.queries() < asked+i {
			if time.Now().After(deadline) {
				t.Fatalf("n0 sent the registry %d queries during the outage, want %d", reg.queries()-asked, i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(discoverTimeout + 200*time.Millisecond)
	}
	for _, p := range n0.Status().Peers {
		if p.Name == "n1" && (p.Endpoint != ep.String() || p.EndpointSource != "registry" || p.Path != PathDirect) {
			t.Errorf("after failed lookups n1 has endpoint %q (source %q), path %q; want %v from the registry, direct", p.Endpoint, p.EndpointSource, p.Path, ep)
		}
	}
	if err := checkTCP(ctx, n0, "n1"); err != nil {
		t.Fatalf("n0 -> n1 during the registry outage: %v", err)
	}
}
