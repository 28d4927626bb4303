package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// testMesh starts size nodes on 127.0.0.1 with ephemeral ports: first with a
// book that has no endpoints, then, once every port is known, with the
// final book reloaded into every node, as an operator would publish it.
type testMesh struct {
	book  *peerbook.Book
	keys  []peerbook.PrivateKey
	nodes []*Node
}

func testBook(t testing.TB, size int) (*peerbook.Book, []peerbook.PrivateKey) {
	t.Helper()
	book := &peerbook.Book{
		Format: 1,
		Source: "test.toml",
		Mesh: peerbook.Mesh{
			Domain:              "mesh",
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
			ListenPort:          51820,
			MTU:                 1420,
			PersistentKeepalive: 25,
		},
	}
	var keys []peerbook.PrivateKey
	for i := range size {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		book.Peers = append(book.Peers, peerbook.Peer{
			Name:      fmt.Sprintf("n%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{
				netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)}),
				netip.MustParseAddr(fmt.Sprintf("fd42:42::%x", i+1)),
			},
		})
	}
	return book, keys
}

func newTestMesh(t testing.TB, size int) *testMesh {
	t.Helper()
	return newTestMeshWith(t, size, nil)
}

// newTestMeshWith lets edit change the book before the nodes start.
func newTestMeshWith(t testing.TB, size int, edit func(*peerbook.Book)) *testMesh {
	t.Helper()
	book, keys := testBook(t, size)
	if edit != nil {
		edit(book)
	}
	m := &testMesh{book: book, keys: keys}
	m.nodes = startNodes(t, book, keys, nil, nil)
	m.publishEndpoints(t)
	return m
}

// startNodes starts a node for each key on an ephemeral port; conf (when
// not nil) adds to each node's Config and prepare to the node before Up.
// The test closes them.
func startNodes(t testing.TB, book *peerbook.Book, keys []peerbook.PrivateKey, conf func(i int, c *Config), prepare func(*Node)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range keys {
		c := Config{Book: book, PrivateKey: keys[i], ListenPort: EphemeralPort}
		if conf != nil {
			conf(i, &c)
		}
		n, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		if prepare != nil {
			prepare(n)
		}
		if err := n.Up(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	return nodes
}

// boundBook returns a copy of book, one serial on, in which every member
// with a node has the port it bound as its listen port and endpoint on
// 127.0.0.1.
func boundBook(book *peerbook.Book, nodes []*Node) *peerbook.Book {
	final := *book
	final.Serial++
	final.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i, n := range nodes {
		if n == nil {
			continue
		}
		port := n.Status().ListenPort
		final.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: port}
		final.Peers[i].ListenPort = port
	}
	return &final
}

// publishEndpoints reloads every node with a book whose endpoints are the
// ports the nodes actually bound.
func (m *testMesh) publishEndpoints(t testing.TB) {
	t.Helper()
	final := boundBook(m.book, m.nodes)
	for _, n := range m.nodes {
		if n == nil {
			continue
		}
		if err := n.Reload(context.Background(), final); err != nil {
			t.Fatal(err)
		}
	}
	m.book = final
}

func TestTwoNodesTCP(t *testing.T) {
	m := newTestMesh(t, 2)
	ln, err := m.nodes[1].Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := m.nodes[0].Dial(ctx, "tcp", "n1.mesh:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	st := m.nodes[0].Status()
	if len(st.Peers) != 1 || st.Peers[0].Name != "n1" || st.Peers[0].LastHandshake.IsZero() || st.Peers[0].RxBytes == 0 {
		t.Fatalf("status after traffic: %+v", st)
	}
}

// serveEcho runs a TCP and a UDP echo on port 7 of n, each reply prefixed
// with the node's name so a test can tell who answered.
func serveEcho(t testing.TB, n *Node, name string) {
	t.Helper()
	ln, err := n.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		c.Write([]byte(name + ":"))
		io.Copy(c, c)
	})
	for _, a := range n.Book().Peers {
		if a.Name != name {
			continue
		}
		for _, addr := range a.Addresses {
			pc, err := n.ListenPacket("udp", netip.AddrPortFrom(addr, 7).String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 2048)
				for {
					k, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(append([]byte(name+":"), buf[:k]...), from)
				}
			}()
		}
	}
}

func checkTCP(ctx context.Context, from *Node, to string) error {
	c, err := from.Dial(ctx, "tcp", to+":7")
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	msg := "ping " + to
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	want := strings.TrimSuffix(to, ".mesh") + ":" + msg
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != want {
		return fmt.Errorf("got %q, want %q", buf, want)
	}
	return nil
}

func checkUDP(ctx context.Context, from *Node, network, to string) error {
	c, err := from.Dial(ctx, network, to+":7")
	if err != nil {
		return err
	}
	defer c.Close()
	want := to + ":dgram"
	buf := make([]byte, 256)
	// Datagrams may be lost while the first handshake completes: retry.
	for attempt := 0; attempt < 20; attempt++ {
		c.Write([]byte("dgram"))
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		k, err := c.Read(buf)
		if err == nil {
			if string(buf[:k]) != want {
				return fmt.Errorf("got %q, want %q", buf[:k], want)
			}
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("no UDP reply from %s", to)
}

func TestMeshAllPairs(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		m := newTestMesh(t, 5)
		for i, n := range m.nodes {
			serveEcho(t, n, m.book.Peers[i].Name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i, from := range m.nodes {
			for j := range m.nodes {
				if i == j {
					continue
				}
				to := m.book.Peers[j].Name
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := checkTCP(ctx, from, to); err != nil {
						errs <- fmt.Errorf("tcp n%d -> %s: %w", i, to, err)
					}
					if err := checkTCP(ctx, from, to+".mesh"); err != nil {
						errs <- fmt.Errorf("tcp n%d -> %s.mesh: %w", i, to, err)
					}
					if err := checkUDP(ctx, from, "udp4", to); err != nil {
						errs <- fmt.Errorf("udp4 n%d -> %s: %w", i, to, err)
					}
					if err := checkUDP(ctx, from, "udp6", to); err != nil {
						errs <- fmt.Errorf("udp6 n%d -> %s: %w", i, to, err)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Every member has shaken hands with every other one.
		for i, n := range m.nodes {
			for _, p := range n.Status().Peers {
				if p.LastHandshake.IsZero() {
					t.Errorf("n%d has no handshake with %s", i, p.Name)
				}
			}
		}
		for _, n := range m.nodes {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	testutil.WaitGoroutines(t, base)
}

func TestRestartedNodeRejoins(t *testing.T) {
	m := newTestMesh(t, 3)
	for i, n := range m.nodes {
		serveEcho(t, n, m.book.Peers[i].Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkTCP(ctx, m.nodes[0], "n2"); err != nil {
		t.Fatal(err)
	}
	// n2 goes away and comes back on the same port with the same key.
	port := m.nodes[2].Status().ListenPort
	if err := m.nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{Book: m.book, PrivateKey: m.keys[2], ListenPort: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	m.nodes[2] = n
	serveEcho(t, n, "n2")
	for _, from := range []int{0, 1} {
		if err := checkTCP(ctx, m.nodes[from], "n2"); err != nil {
			t.Fatalf("n%d -> restarted n2: %v", from, err)
		}
	}
	if err := checkTCP(ctx, n, "n0"); err != nil {
		t.Fatalf("restarted n2 -> n0: %v", err)
	}
}
