package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// relayedPair starts a relay n0 and members n1 and n2 on an in-memory
// network and fake clocks (fake_test.go). n1 and n2 are told to reach each
// other at an address that swallows every packet, as two members behind
// symmetric NATs would be. It waits, in fake time, until both relay, and
// checks that n1 reaches n2 through the relay. It returns the mesh and the
// book with the right endpoints. With quiet, n1 and n2 send each other
// nothing until both relay, so neither device ever tries a direct
// handshake on its own.
func relayedPair(t *testing.T, ctx context.Context, quiet bool, prepare func(*Node)) (*fakeMesh, *peerbook.Book) {
	t.Helper()
	book, keys := testBook(t, 3)
	book.Peers[0].Name, book.Peers[0].Relay = "relay", true
	m := startFakeNodes(t, book, keys, nil, prepare)
	nodes := m.nodes
	hole := m.net.hole()
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
	if !quiet {
		// n1 sends to n2 first: its device tries the hole meanwhile.
		c, err := nodes[1].Dial(ctx, "udp", "n2:9")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("knock"))
		c.Close()
	}
	// Still direct-or-nothing one tick before the relay wait ends (the
	// wait counts from the first tick that saw the endpoint)...
	m.advance(t, relayAfter-pathTick, pathTick)
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		if p := pathTo(nodes[i], peer); p != PathNone {
			t.Fatalf("n%d's path to %s is %q after %v of fake time, before the relay wait", i, peer, p, relayAfter-pathTick)
		}
	}
	// ... and relayed once it has.
	m.advance(t, 2*pathTick, pathTick)
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		if p := pathTo(nodes[i], peer); p != "relayed via relay" {
			t.Fatalf("n%d's path to %s is %q after %v of fake time", i, peer, p, relayAfter+pathTick)
		}
	}
	// n1 -> n2 works once both sides relay.
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2 through the relay: %v", err)
	}
	return m, &final
}

// TestRelayWhenDirectFails: n1 and n2 cannot reach each other directly.
// After the relay wait (12 s, in fake time) they talk through n0, the
// relay, and both say so in their status.
func TestRelayWhenDirectFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, _ := relayedPair(t, ctx, false, nil)
	nodes := m.nodes
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
	if owner := allowedIPOwner(text, "10.42.0.3/32"); owner != hexKey(nodes[0].PublicKey()) {
		t.Fatalf("n1 routes n2's address to %q, want the relay's entry:\n%s", owner, redactKeys(text))
	}
}

// TestRelayBackToDirect: n1 and n2 relay; then they learn each other's
// right endpoints. Once a direct handshake succeeds both go back to the
// direct path: the status says so, n2's addresses are on n2's own entry
// again, and traffic between them no longer passes the relay.
func TestRelayBackToDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, final := relayedPair(t, ctx, false, nil)
	nodes := m.nodes
	for _, n := range nodes[1:] {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		m.waitPath(t, nodes[i], peer, PathDirect, 60*time.Second)
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
// path starts to work, the relayed members' own probes (every 20 s, in
// fake time) find it.
func TestRelayedMemberProbesDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, final := relayedPair(t, ctx, true, nil)
	nodes := m.nodes
	for _, n := range nodes[1:] {
		if err := n.Reload(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	for i, peer := range map[int]string{1: "n2", 2: "n1"} {
		m.waitPath(t, nodes[i], peer, PathDirect, 3*directProbeEvery)
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

// TestRelaysDoNotRelayThroughEachOther: two relay members, r1 and r2, and
// an offline member d. An ordinary member m relays d through r1, as it
// should; but r1 must not relay d through r2 nor r2 through r1, or each
// would hand d's packets to the other and they would be lost.
func TestRelaysDoNotRelayThroughEachOther(t *testing.T) {
	book, keys := testBook(t, 4)
	for i, name := range []string{"r1", "r2", "m", "d"} {
		book.Peers[i].Name = name
	}
	book.Peers[0].Relay, book.Peers[1].Relay = true, true
	mesh := startFakeNodes(t, book, keys[:3], nil, nil)
	nodes := mesh.nodes
	holeAt := mesh.net.hole()
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
	mesh.advance(t, relayAfter+pathTick, pathTick)
	if p := pathTo(m, "d"); p != "relayed via r1" {
		t.Fatalf("m's path to d is %q after the relay wait, want relayed via r1", p)
	}
	// The relays have had as long as m, and then as long again.
	mesh.advance(t, relayAfter, pathTick)
	if p := pathTo(r1, "d"); p != PathNone {
		t.Errorf("r1's path to d is %q, want %q", p, PathNone)
	}
	if p := pathTo(r2, "d"); p != PathNone {
		t.Errorf("r2's path to d is %q, want %q", p, PathNone)
	}
}
