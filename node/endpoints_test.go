package node

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// deadUDP binds a UDP port on loopback that reads nothing: a member
// endpoint that never answers.
func deadUDP(t *testing.T) uint16 {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// TestEndpointsDeadFirstEntry: beta lists a dead address first, then its
// DDNS name. alpha (no endpoint of its own, so beta cannot reach it first)
// moves on from the dead entry, resolves the name and reaches beta; when
// the session goes stale it starts again from the first entry and comes
// back to the working one.
func TestEndpointsDeadFirstEntry(t *testing.T) {
	d := newTestDNS(t)
	d.set("beta.test", netip.MustParseAddr("127.0.0.1"))
	book, keys := testBook(t, 2)
	nodes := startNodes(t, book, keys, func(_ int, c *Config) {
		c.Resolver, c.ResolveInterval = d.resolver(), time.Minute
	}, nil)
	alpha, beta := nodes[0], nodes[1]
	final := boundBook(book, nodes)
	final.Peers[0].Endpoint = peerbook.Endpoint{}
	dead := peerbook.Endpoint{Host: "127.0.0.1", Port: deadUDP(t)}
	live := peerbook.Endpoint{Host: "beta.test", Port: final.Peers[1].Endpoint.Port}
	final.Peers[1].Endpoints = []peerbook.Endpoint{dead, live}
	final.Peers[1].Endpoint = dead
	if err := peerbook.Validate(final); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.Reload(context.Background(), final); err != nil {
			t.Fatal(err)
		}
	}
	betaKey := keys[1].Public()
	deadAP, _ := dead.Addr()
	if ep := alpha.deviceEndpoint(betaKey); ep != deadAP {
		t.Fatalf("alpha starts with %v, want the first entry %v", ep, deadAP)
	}
	serveEcho(t, beta, "n1")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkTCP(ctx, alpha, "n1"); err != nil {
		t.Fatalf("alpha -> beta past a dead first endpoint: %v", err)
	}
	liveAP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), live.Port)
	if ep := alpha.deviceEndpoint(betaKey); ep != liveAP {
		t.Fatalf("alpha reached beta at %v, want %v", ep, liveAP)
	}
	t.Logf("reached past the dead first entry in %v", time.Since(start).Round(100*time.Millisecond))
	if st := alpha.Status(); st.Peers[0].EndpointSource != "dns" {
		t.Errorf("endpoint source %q, want dns", st.Peers[0].EndpointSource)
	}

	// The session goes stale: alpha tries the first entry again, then
	// the name.
	alpha.do(func() {
		alpha.staleAfter = time.Nanosecond
	})
	waitEndpoint(t, alpha, betaKey, deadAP, 5*time.Second)
	alpha.do(func() {
		alpha.staleAfter = 0
	})
	waitEndpoint(t, alpha, betaKey, liveAP, 3*candidateWait)
	if err := checkTCP(ctx, alpha, "n1"); err != nil {
		t.Fatalf("alpha -> beta after going round the endpoints again: %v", err)
	}
}
