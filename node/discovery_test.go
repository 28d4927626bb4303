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
// serve it, here a registry.Server on loopback) and reaches n1.
func TestExternalRegistry(t *testing.T) {
	book, keys := testBook(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// n1 first, so its port is known to the registry.
	n1, err := New(Config{Book: book, PrivateKey: keys[1], ListenPort: EphemeralPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Up(ctx); err != nil {
		t.Fatal(err)
	}
	defer n1.Close()
	n1Endpoint := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n1.Status().ListenPort)

	srv := &registry.Server{Zone: "example.net.", Members: func() []registry.Member {
		return []registry.Member{{PublicKey: keys[1].Public(), Endpoint: n1Endpoint, AllowedIPs: book.Peers[1].AllowedIPs()}}
	}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServePacketConn(pc)
	defer srv.Close()

	n0, err := New(Config{Book: book, PrivateKey: keys[0], ListenPort: EphemeralPort,
		Registry: pc.LocalAddr().String(), RegistryZone: "example.net"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Up(ctx); err != nil {
		t.Fatal(err)
	}
	defer n0.Close()
	waitEndpoint(t, n0, keys[1].Public(), n1Endpoint, 10*time.Second)
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
// on looking n1 up (every 200 ms here instead of every minute) and each
// lookup fails, but the endpoint and the direct path stay.
func TestRegistryOutageKeepsDirectPath(t *testing.T) {
	book, keys := testBook(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n1 := startNodes(t, book, keys[1:], nil, nil)[0]
	n1Endpoint := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n1.Status().ListenPort)

	reg := &outageRegistry{ids: map[uint16]bool{}, srv: &registry.Server{Zone: "example.net.", Members: func() []registry.Member {
		return []registry.Member{{PublicKey: keys[1].Public(), Endpoint: n1Endpoint, AllowedIPs: book.Peers[1].AllowedIPs()}}
	}}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: reg}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	n0 := startNodes(t, book, keys[:1], func(_ int, c *Config) {
		c.Registry, c.RegistryZone = pc.LocalAddr().String(), "example.net"
	}, func(n *Node) { n.discoverReachable = 200 * time.Millisecond })[0]
	waitEndpoint(t, n0, keys[1].Public(), n1Endpoint, 10*time.Second)
	serveEcho(t, n1, "n1")
	if err := checkTCP(ctx, n0, "n1"); err != nil {
		t.Fatalf("n0 -> n1 through the registry's endpoint: %v", err)
	}

	reg.down.Store(true)
	// Two more queries: the first lookup after the outage has failed (it
	// timed out) and the next one has begun.
	asked := reg.queries()
	deadline := time.Now().Add(20 * time.Second)
	for reg.queries() < asked+2 {
		if time.Now().After(deadline) {
			t.Fatalf("n0 sent the registry %d queries during the outage, want 2 within 20s", reg.queries()-asked)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range n0.Status().Peers {
		if p.Name == "n1" && (p.Endpoint != n1Endpoint.String() || p.EndpointSource != "registry" || p.Path != PathDirect) {
			t.Errorf("after failed lookups n1 has endpoint %q (source %q), path %q; want %v from the registry, direct", p.Endpoint, p.EndpointSource, p.Path, n1Endpoint)
		}
	}
	if err := checkTCP(ctx, n0, "n1"); err != nil {
		t.Fatalf("n0 -> n1 during the registry outage: %v", err)
	}
}
