package node

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

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
	book, keys := testBook(t, size)
	m := &testMesh{book: book, keys: keys}
	ctx := context.Background()
	for i := range size {
		n, err := New(Config{Book: book, PrivateKey: keys[i], ListenPort: EphemeralPort})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		m.nodes = append(m.nodes, n)
	}
	m.publishEndpoints(t)
	return m
}

// publishEndpoints reloads every node with a book whose endpoints are the
// ports the nodes actually bound.
func (m *testMesh) publishEndpoints(t testing.TB) {
	t.Helper()
	final := *m.book
	final.Serial++
	final.Peers = append([]peerbook.Peer(nil), m.book.Peers...)
	for i, n := range m.nodes {
		if n == nil {
			continue
		}
		port := n.Status().ListenPort
		final.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: port}
		final.Peers[i].ListenPort = port
	}
	for _, n := range m.nodes {
		if n == nil {
			continue
		}
		if err := n.Reload(context.Background(), &final); err != nil {
			t.Fatal(err)
		}
	}
	m.book = &final
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
	c, err := m.nodes[0].Dial(ctx, "tcp", "n1:80")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	t.Logf("%+v", m.nodes[0].Status())
}
