package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// withRules returns book, one serial on, with groups given to members by
// name and rules ([[rule]] tables in TOML) in place of its rules, parsed
// and validated as a book file would be.
func withRules(t testing.TB, book *peerbook.Book, groups map[string][]string, rules string) *peerbook.Book {
	t.Helper()
	b := *book
	b.Serial++
	b.Rules = nil
	b.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i := range b.Peers {
		if g, ok := groups[b.Peers[i].Name]; ok {
			b.Peers[i].Groups = g
		}
	}
	out, err := peerbook.Parse(book.Source, append(peerbook.Marshal(&b), rules...))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reloadAll reloads every node with book.
func reloadAll(t testing.TB, nodes []*Node, book *peerbook.Book) {
	t.Helper()
	for _, n := range nodes {
		if err := n.Reload(context.Background(), book); err != nil {
			t.Fatal(err)
		}
	}
}

// denied is how long a flow the rules drop is given to get through.
const denied = 1500 * time.Millisecond

func expectTCP(t *testing.T, from *Node, to string, allowed bool) {
	t.Helper()
	if allowed {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := checkTCP(ctx, from, to); err != nil {
			t.Errorf("%s -> %s tcp: %v, want allowed", from.Status().Name, to, err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), denied)
	defer cancel()
	if err := checkTCP(ctx, from, to); err == nil {
		t.Errorf("%s -> %s tcp passed, want dropped by the rules", from.Status().Name, to)
	}
}

func expectUDP(t *testing.T, from *Node, to string, allowed bool) {
	t.Helper()
	timeout := denied
	if allowed {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := checkUDP(ctx, from, "udp", to)
	if allowed && err != nil {
		t.Errorf("%s -> %s udp: %v, want allowed", from.Status().Name, to, err)
	}
	if !allowed && err == nil {
		t.Errorf("%s -> %s udp passed, want dropped by the rules", from.Status().Name, to)
	}
}

func peerStatus(n *Node, name string) PeerStatus {
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p
		}
	}
	return PeerStatus{}
}

var meshGroups = map[string][]string{"n0": {"servers"}, "n1": {"staff"}}

// TestRulesInMesh: four netstack members on loopback, n0 a server, n1
// staff, n2 a CI runner, n3 open to all. Each flow passes or not as the
// rules say, by protocol, port, group and "*"; replies pass without a
// rule; unsolicited reverse flows do not; drops show in Status.
func TestRulesInMesh(t *testing.T) {
	m := newTestMesh(t, 4)
	for i, n := range m.nodes {
		serveEcho(t, n, "n"+strconv.Itoa(i))
	}
	book := withRules(t, m.book, meshGroups, `
[[rule]]
from = ["group:staff"]
to = ["group:servers"]
ports = ["tcp:7"]

[[rule]]
from = ["n2"]
to = ["n0"]
ports = ["udp:7"]

[[rule]]
from = ["*"]
to = ["n3"]
ports = ["tcp:7"]
`)
	reloadAll(t, m.nodes, book)
	n0, n1, n2, n3 := m.nodes[0], m.nodes[1], m.nodes[2], m.nodes[3]

	expectTCP(t, n1, "n0", true)  // by group, and n0's answers pass at n1 unopened
	expectUDP(t, n1, "n0", false) // not that protocol
	expectUDP(t, n2, "n0", true)  // by name
	expectTCP(t, n2, "n0", false)
	expectTCP(t, n3, "n0", false) // no rule at all
	expectTCP(t, n0, "n1", false) // the reverse of an allowed flow
	for _, from := range []*Node{n0, n1, n2} {
		expectTCP(t, from, "n3", true) // "*"
		expectUDP(t, from, "n3", false)
	}

	st := n0.Status()
	if st.Rules != 3 {
		t.Errorf("n0's status shows %d rules, want 3", st.Rules)
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		if p := peerStatus(n0, name); p.Dropped == 0 || p.DroppedBy["no-rule"] != p.Dropped {
			t.Errorf("n0's drops from %s: %d %v", name, p.Dropped, p.DroppedBy)
		}
	}
	if p := peerStatus(n3, "n0"); p.Dropped == 0 {
		t.Errorf("n3 counts no drops from n0 (udp)")
	}
}

// TestRulesReload: a book without rules lets every flow in; a reload that
// adds a rule opens only what it names; a reload that takes the rule away
// cuts the connection it allowed at its next packet; going back to no
// rules opens everything again.
func TestRulesReload(t *testing.T) {
	m := newTestMesh(t, 2)
	n0, n1 := m.nodes[0], m.nodes[1]
	serveEcho(t, n0, "n0")
	serveEcho(t, n1, "n1")
	expectTCP(t, n0, "n1", true)
	expectTCP(t, n1, "n0", true)
	expectUDP(t, n1, "n0", true)

	open := withRules(t, m.book, nil, "\n[[rule]]\nfrom = [\"n0\"]\nto = [\"n1\"]\nports = [\"tcp:7\"]\n")
	reloadAll(t, m.nodes, open)
	expectTCP(t, n0, "n1", true)
	expectTCP(t, n1, "n0", false)
	expectUDP(t, n1, "n0", false)

	// A connection the rule allows, open across the reload that ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := n0.Dial(ctx, "tcp", "n1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf[:3]); err != nil || string(buf[:3]) != "n1:" {
		t.Fatalf("greeting: %q %v", buf[:3], err)
	}
	closed := withRules(t, open, nil, "\n[[rule]]\nfrom = [\"n1\"]\nto = [\"n0\"]\nports = [\"tcp:7\"]\n")
	reloadAll(t, m.nodes, closed)
	c.SetDeadline(time.Now().Add(denied))
	c.Write([]byte("still?"))
	if n, err := io.ReadFull(c, buf[:6]); err == nil {
		t.Errorf("the connection survived the rule's removal: read %q", buf[:n])
	}
	expectTCP(t, n0, "n1", false)
	expectTCP(t, n1, "n0", true)

	none := withRules(t, closed, nil, "")
	reloadAll(t, m.nodes, none)
	expectTCP(t, n0, "n1", true)
	expectTCP(t, n1, "n0", true)
	expectUDP(t, n0, "n1", true)
	if st := n1.Status(); st.Rules != 0 {
		t.Errorf("rules in force after a book without rules: %d", st.Rules)
	}
}

// TestRulesThroughRelay: n1 and n2 reach each other only through the
// relay. The relay forwards what the rules let n2 accept from n1 without
// judging it as traffic to itself, and n1 judges what n2 sends through the
// relay by n2's own address: the reverse flow is dropped and counted
// against n2, not against the relay.
func TestRulesThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, _ := relayedPair(t, ctx, true, nil)
	nodes := m.nodes
	serveEcho(t, nodes[1], "n1")
	rules := "\n[[rule]]\nfrom = [\"n1\"]\nto = [\"n2\"]\nports = [\"tcp:7\"]\n"
	for _, n := range nodes {
		// Each keeps its own view of the endpoints (n1 and n2 still
		// cannot reach each other directly).
		if err := n.Reload(ctx, withRules(t, n.Book(), nil, rules)); err != nil {
			t.Fatal(err)
		}
	}
	expectTCP(t, nodes[1], "n2", true)
	expectTCP(t, nodes[2], "n1", false)
	expectTCP(t, nodes[1], "relay", false)
	if p := pathTo(nodes[1], "n2"); p != "relayed via relay" {
		t.Fatalf("n1's path to n2 is %q; the test needs the relay", p)
	}
	if p := peerStatus(nodes[1], "n2"); p.Dropped == 0 {
		t.Error("n1 counts no drops from n2")
	}
	if p := peerStatus(nodes[1], "relay"); p.Dropped != 0 {
		t.Errorf("n1 counts n2's packets against the relay: %d", p.Dropped)
	}
	for _, p := range nodes[0].Status().Peers {
		if p.Name == "n2" && p.Dropped != 0 {
			t.Errorf("the relay judged relayed packets as its own: %d dropped from n2", p.Dropped)
		}
	}
	if nodes[0].relay.relayedN.Load() == 0 {
		t.Error("the relay forwarded nothing")
	}
}

// TestRulesNetstackSubnetRouter: n1 routes a subnet without root (the
// netstack subnet router); a rule opens one host port of it to n0. That
// port is reached, another port of the same host is not, and neither is
// n1 itself.
func TestRulesNetstackSubnetRouter(t *testing.T) {
	m := newTestMeshWith(t, 2, func(b *peerbook.Book) {
		b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
	})
	serveEcho(t, m.nodes[1], "n1")
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		testutil.ServeConns(t, ln, func(c net.Conn) { io.WriteString(c, "lan\n") })
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	reloadAll(t, m.nodes, withRules(t, m.book, nil, `
[[rule]]
from = ["n0"]
to = ["subnet:127.0.0.0/24"]
ports = ["tcp:`+strconv.Itoa(ports[0])+`"]
`))
	dial := func(port int, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := m.nodes[0].Dial(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return err
	}
	if err := dial(ports[0], 20*time.Second); err != nil {
		t.Errorf("the opened port of the subnet: %v", err)
	}
	if err := dial(ports[1], denied); err == nil {
		t.Error("another port of the subnet passed")
	}
	expectTCP(t, m.nodes[0], "n1", false)
	if p := peerStatus(m.nodes[1], "n0"); p.Dropped == 0 {
		t.Error("the subnet router counts no drops")
	}
}

// BenchmarkRulesMeshThroughput: TCP through a two-member netstack mesh in
// one process, n0 sending to n1, with no rules and with 100 (99 opening
// other ports, the last the benchmark's); every segment is judged by a
// rule at n1 and every ACK as a tracked reply at n0. Run with -count and
// compare the medians of the two (bytes/s).
func BenchmarkRulesMeshThroughput(b *testing.B) {
	var hundred strings.Builder
	for i := range 99 {
		fmt.Fprintf(&hundred, "\n[[rule]]\nfrom = [\"n0\"]\nto = [\"n1\"]\nports = [\"tcp:%d\", \"tcp:%d-%d\", \"udp:%d\"]\n", 10000+i, 20000+10*i, 20005+10*i, 40000+i)
	}
	hundred.WriteString("\n[[rule]]\nfrom = [\"n0\"]\nto = [\"n1\"]\nports = [\"tcp:9\"]\n")
	for _, c := range []struct{ name, rules string }{{"rules=0", ""}, {"rules=100", hundred.String()}} {
		b.Run(c.name, func(b *testing.B) {
			m := newTestMesh(b, 2)
			reloadAll(b, m.nodes, withRules(b, m.book, nil, c.rules))
			ln, err := m.nodes[1].Listen("tcp", ":9")
			if err != nil {
				b.Fatal(err)
			}
			testutil.ServeConns(b, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := m.nodes[0].Dial(ctx, "tcp", "n1:9")
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := conn.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for i, n := range m.nodes {
				if d := peerStatus(n, "n"+strconv.Itoa(1-i)).Dropped; d != 0 {
					b.Errorf("n%d dropped %d packets of the benchmark's flow", i, d)
				}
			}
		})
	}
}
