package node

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// relayedPair starts a relay n0 and members n1 and n2 that are told to
// reach each other at a socket that swallows every packet, as two members
// behind symmetric NATs would be, and waits until both have talked
// through the relay. It returns the nodes and the book with the right
// endpoints. With quiet, n1 and n2 send each other nothing until both
// relay, so neither device ever tries a direct handshake on its own.
func relayedPair(t *testing.T, ctx context.Context, quiet bool, prepare func(*Node)) ([]*Node, *peerbook.Book) {
	t.Helper()
	blackhole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blackhole.Close() })
	hole := netip.MustParseAddrPort(blackhole.LocalAddr().String())

	book, keys := testBook(t, 3)
	book.Peers[0].Name, book.Peers[0].Relay = "relay", true
	nodes := startNodes(t, book, keys, nil, func(n *Node) {
		n.relayAfter = 2 * time.Second
		if prepare != nil {
			prepare(n)
		}
	})
	final := *boundBook(book, nodes)
	// n1 and n2 get each other's endpoint wrong: straight into the hole.
	wrong := func(name string) *peerbook.Book {
		b := final
		b.Peers = append([]peerbook.Peer(nil), final.Peers...)
		for i := range b.Peers {
			if b.Peers[i].Name == name {
				b.Peers[i].Endpoint = peerbook.Endpoint{Host: hole.Addr().String(), Port: hole.Port()}
			}
		}
		return &b
	}
	if err := nodes[0].Reload(ctx, &final); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Reload(ctx, wrong("n2")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Reload(ctx, wrong("n1")); err != nil {
		t.Fatal(err)
	}
	// Both reach the relay.
	serveEcho(t, nodes[0], "relay")
	serveEcho(t, nodes[2], "n2")
	if err := checkTCP(ctx, nodes[1], "relay"); err != nil {
		t.Fatal(err)
	}
	if err := checkTCP(ctx, nodes[2], "relay"); err != nil {
		t.Fatal(err)
	}
	if quiet {
		waitPath(t, nodes[1], "n2", "relayed via relay", 15*time.Second)
		waitPath(t, nodes[2], "n1", "relayed via relay", 15*time.Second)
	}
	// n1 -> n2 works once both sides relay.
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2 through the relay: %v", err)
	}
	return nodes, &final
}

// TestRelayWhenDirectFails: n1 and n2 cannot reach each other directly.
// After the relay wait they talk through n0, the relay, and both say so in
// their status.
func TestRelayWhenDirectFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, _ := relayedPair(t, ctx, false, nil)
	for i, want := range map[int]string{1: "n2", 2: "n1"} {
		if path := pathTo(nodes[i], want); path != "relayed via relay" {
			t.Errorf("n%d's path to %s is %q", i, want, path)
		}
	}
	if nodes[0].relay.relayedN.Load() == 0 {
		t.Error("the relay forwarded nothing")
	}
	for _, p := range nodes[0].Status().Peers {
		if p.Path != PathDirect {
			t.Errorf("relay's path to %s is %q", p.Name, p.Path)
		}
	}
	// n1's device routes n2's addresses through the relay.
	text, _ := nodes[1].dev.IpcGet()
	if !strings.Contains(text, "allowed_ip=10.42.0.3/32") {
		t.Fatalf("n2's address not routed at all:\n%s", redactKeys(text))
	}
}

// TestRelayBackToDirect: n1 and n2 relay; then they learn each other's
// right endpoints. Once a direct handshake succeeds both go back to the
// direct path: the status says so, n2's addresses are on n2's own entry
// again, and traffic between them no longer passes the relay.
func TestRelayBackToDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, final := relayedPair(t, ctx, false, nil)
	for _, n := range nodes[1:] {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		waitPath(t, nodes[i], peer, PathDirect, 30*time.Second)
	}
	text, _ := nodes[1].dev.IpcGet()
	if owner := allowedIPOwner(text, "10.42.0.3/32"); owner != hexKey(nodes[2].PublicKey()) {
		t.Errorf("n1 routes n2's address to %s, want n2's own entry", owner)
	}
	relayed := nodes[0].relay.relayedN.Load()
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2 directly: %v", err)
	}
	if d := nodes[0].relay.relayedN.Load() - relayed; d != 0 {
		t.Errorf("the relay forwarded %d more packets after the path went direct", d)
	}
}

// TestRelayedMemberProbesDirect: n1 and n2 relay before either sent the
// other anything, so their devices never try a direct handshake by
// themselves (as when their retries gave up after 90 s, or with no
// keepalive between members that both have endpoints). When the direct
// path starts to work, the relayed members' own probes find it.
func TestRelayedMemberProbesDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, final := relayedPair(t, ctx, true, func(n *Node) { n.probeEvery = 500 * time.Millisecond })
	for _, n := range nodes[1:] {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		waitPath(t, nodes[i], peer, PathDirect, 15*time.Second)
	}
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2 directly: %v", err)
	}
}

// allowedIPOwner returns the hex public key of the entry that holds prefix
// in a UAPI get text, or "".
func allowedIPOwner(text, prefix string) string {
	var cur string
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, "public_key="); ok {
			cur = v
		}
		if l == "allowed_ip="+prefix {
			return cur
		}
	}
	return ""
}

func redactKeys(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "private_key=") {
			l = "private_key=(redacted)"
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// pathTo returns n's path to the member named name.
func pathTo(n *Node, name string) string {
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p.Path
		}
	}
	return ""
}

// waitPath waits, bounded, until n's path to name is want.
func waitPath(t *testing.T, n *Node, name, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pathTo(n, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s's path to %s is %q, want %q within %v", n.Status().Name, name, pathTo(n, name), want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRelaysDoNotRelayThroughEachOther: two relay members, r1 and r2, and
// an offline member d. An ordinary member m relays d through r1, as it
// should; but r1 must not relay d through r2 nor r2 through r1, or each
// would hand d's packets to the other and they would be lost.
func TestRelaysDoNotRelayThroughEachOther(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	holeAt := netip.MustParseAddrPort(hole.LocalAddr().String())

	book, keys := testBook(t, 4)
	for i, name := range []string{"r1", "r2", "m", "d"} {
		book.Peers[i].Name = name
	}
	book.Peers[0].Relay, book.Peers[1].Relay = true, true
	const wait = 200 * time.Millisecond
	nodes := startNodes(t, book, keys[:3], nil, func(n *Node) { n.relayAfter = wait })
	final := boundBook(book, nodes)
	final.Peers[3].Endpoint = peerbook.Endpoint{Host: holeAt.Addr().String(), Port: holeAt.Port()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, n := range nodes {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
		serveEcho(t, n, final.Peers[i].Name)
	}
	// Every live pair shakes hands, so each relay is usable by the others.
	for _, from := range nodes {
		for _, to := range []string{"r1", "r2", "m"} {
			if to == from.Status().Name {
				continue
			}
			if err := checkTCP(ctx, from, to); err != nil {
				t.Fatalf("%s -> %s: %v", from.Status().Name, to, err)
			}
		}
	}
	r1, r2, m := nodes[0], nodes[1], nodes[2]
	waitPath(t, m, "d", "relayed via r1", 15*time.Second)
	// The relays have had as long as m; evaluate their paths once more,
	// well after their relay wait ended.
	for _, r := range []*Node{r1, r2} {
		r.updatePaths(time.Now())
	}
	time.Sleep(2 * wait)
	for _, r := range []*Node{r1, r2} {
		r.updatePaths(time.Now())
	}
	if p := pathTo(r1, "d"); p != PathNone {
		t.Errorf("r1's path to d is %q, want %q", p, PathNone)
	}
	if p := pathTo(r2, "d"); p != PathNone {
		t.Errorf("r2's path to d is %q, want %q", p, PathNone)
	}
}
