package node

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// outsideNet stands for the Internet as the exit member's host sees it:
// every dial lands on one loopback server that answers "outside" and the
// address asked for.
type outsideNet struct {
	srv   string
	dials atomic.Int32
}

func (o *outsideNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	o.dials.Add(1)
	var d net.Dialer
	c, err := d.DialContext(ctx, network, o.srv)
	if err == nil {
		_, err = c.Write([]byte(address + "\n"))
	}
	return c, err
}

// fetchOutside dials addr through n and returns the line the outside
// server echoes (the address the exit dialed), or the error.
func fetchOutside(n *Node, addr string, wait time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := n.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestNetstackExit: n0 is an exit member in netstack mode, n1 uses it
// (Config.ExitNode), n2 does not. n1 reaches a destination outside the
// mesh through n0's host sockets; n2 is refused at once with a message
// naming --exit-node. Rules: "*" to "*" keeps the mesh open but not the
// exit; exit:n0 opens it. Fail closed: n0 stops forwarding when its own
// book drops exit = true (n1 still sends), and n1 refuses once its book
// does.
func TestNetstackExit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte(line))
	})
	outside := &outsideNet{srv: ln.Addr().String()}
	book, keys := testBook(t, 3)
	book.Peers[0].Exit = true
	nodes := startNodes(t, book, keys, func(i int, c *Config) {
		if i == 1 {
			c.ExitNode = "n0"
		}
	}, func(n *Node) {
		n.hooks.hostDial = outside
	})
	m := &testMesh{book: book, keys: keys, nodes: nodes}
	m.publishEndpoints(t)
	exit, client, plain := nodes[0], nodes[1], nodes[2]
	const dst = "198.51.100.7:80"

	got, err := fetchOutside(client, dst, 10*time.Second)
	if err != nil || got != dst {
		t.Fatalf("through the exit: %q, %v; want %q", got, err, dst)
	}
	if !client.ExitActive() || plain.ExitActive() || exit.ExitActive() {
		t.Errorf("ExitActive: client %v, plain %v, exit %v", client.ExitActive(), plain.ExitActive(), exit.ExitActive())
	}
	if _, err := fetchOutside(plain, dst, 5*time.Second); err == nil || !strings.Contains(err.Error(), "outside the mesh") || !strings.Contains(err.Error(), "--exit-node") {
		t.Errorf("a member without an exit node: %v", err)
	}

	reload := func(b *peerbook.Book, ns ...*Node) {
		t.Helper()
		for _, n := range ns {
			if err := n.Reload(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	withRules := func(rules ...peerbook.Rule) *peerbook.Book {
		b := *m.book
		b.Serial++
		b.Rules = rules
		m.book = &b
		return &b
	}
	everyone := peerbook.Rule{From: []peerbook.Selector{{Kind: peerbook.SelectAll}}, To: []peerbook.Selector{{Kind: peerbook.SelectAll}},
		Ports: []peerbook.PortRange{{Proto: peerbook.ProtoAny}}}
	reload(withRules(everyone), nodes...)
	before := outside.dials.Load()
	if got, err := fetchOutside(client, dst, 2*time.Second); err == nil {
		t.Errorf("rules without exit:n0 let the client through the exit: %q", got)
	}
	if n := outside.dials.Load() - before; n != 0 {
		t.Errorf("the exit dialed %d times for a flow the rules deny", n)
	}
	lnMesh, err := exit.Listen("tcp", ":81")
	if err != nil {
		t.Fatal(err)
	}
	defer lnMesh.Close()
	go func() {
		for {
			c, err := lnMesh.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("mesh\n"))
			c.Close()
		}
	}()
	if got, err := fetchOutside(client, "n0:81", 10*time.Second); err != nil || got != "mesh" {
		t.Errorf("mesh traffic under the rules: %q, %v", got, err)
	}
	viaExit := peerbook.Rule{From: []peerbook.Selector{{Kind: peerbook.SelectMember, Name: "n1"}},
		To: []peerbook.Selector{{Kind: peerbook.SelectExit, Name: "n0"}}, Ports: []peerbook.PortRange{{Proto: peerbook.ProtoTCP, Lo: 80, Hi: 80}}}
	reload(withRules(everyone, viaExit), nodes...)
	if got, err := fetchOutside(client, dst, 10*time.Second); err != nil || got != dst {
		t.Errorf("with exit:n0 in a rule: %q, %v", got, err)
	}
	if got, err := fetchOutside(client, "198.51.100.7:443", 2*time.Second); err == nil {
		t.Errorf("a port the exit rule does not list: %q", got)
	}

	// The exit's own book drops exit = true; the client still sends.
	noExit := *withRules()
	noExit.Peers = append([]peerbook.Peer(nil), noExit.Peers...)
	noExit.Peers[0].Exit = false
	reload(&noExit, exit)
	before = outside.dials.Load()
	if got, err := fetchOutside(client, dst, 2*time.Second); err == nil {
		t.Errorf("the exit forwards after losing exit = true: %q", got)
	}
	if n := outside.dials.Load() - before; n != 0 {
		t.Errorf("the exit dialed %d times after losing exit = true", n)
	}
	reload(&noExit, client, plain)
	if _, err := fetchOutside(client, dst, 5*time.Second); err == nil || !strings.Contains(err.Error(), `exit node "n0" is no longer an exit member`) {
		t.Errorf("client after the exit lost exit = true: %v", err)
	}
	if client.ExitActive() {
		t.Error("ExitActive after the exit lost exit = true")
	}
}

// TestExitNodeChecks: Up refuses an exit node that is no member, this
// member itself, or a member without exit = true (naming its line), in
// both modes' shared check.
func TestExitNodeChecks(t *testing.T) {
	book, keys := testBook(t, 2)
	book.Peers[1].Line = 12
	for name, want := range map[string]string{
		"nx": `exit node "nx" is not a member`,
		"n0": `exit node "n0" is this member itself`,
		"n1": `member "n1" is not an exit member; set exit = true on it in the peer book test.toml (line 12)`,
	} {
		n, err := New(Config{Book: book, PrivateKey: keys[0], ListenPort: EphemeralPort, ExitNode: name})
		if err != nil {
			t.Fatal(err)
		}
		err = n.Up(context.Background())
		n.Close()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("exit node %q: %v, want %q", name, err, want)
		}
	}
}
