package node

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

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
