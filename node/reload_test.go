package node

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestReloadUnderLoad streams 50 MiB from n1 to n0 while the book is
// rewritten 50 times: members come and go, endpoints change, and one
// version in between is invalid. The stream must arrive byte-exact and the
// reloads must not cause a new handshake between n0 and n1.
func TestReloadUnderLoad(t *testing.T) {
	m := newTestMesh(t, 3)
	a, b := m.nodes[0], m.nodes[1]
	const size = 50 << 20
	ln, err := a.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, "tcp", "n0:9000")
	if err != nil {
		t.Fatal(err)
	}
	// The handshake that carries the stream happened now; remember it.
	time.Sleep(100 * time.Millisecond)
	before := handshakeWith(a, "n1")
	if before.IsZero() {
		t.Fatal("no handshake between n0 and n1")
	}

	want := sha256.New()
	sent := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 64<<10)
		var err error
		for written := 0; written < size && err == nil; written += len(buf) {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			want.Write(buf)
			_, err = c.Write(buf)
		}
		c.Close()
		sent <- err
	}()

	// Rewrite the book while the stream runs.
	extra := make([]peerbook.PrivateKey, 5)
	for i := range extra {
		extra[i], _ = peerbook.GeneratePrivateKey()
	}
	rejected, applied := 0, 0
	for v := 1; v <= 50; v++ {
		next := *m.book
		next.Serial = m.book.Serial + uint64(v)
		next.Peers = append([]peerbook.Peer(nil), m.book.Peers...)
		// Members come and go.
		for i := range v % len(extra) {
			next.Peers = append(next.Peers, peerbook.Peer{
				Name:      fmt.Sprintf("extra%d", i),
				PublicKey: extra[i].Public(),
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 1, byte(i + 1)})},
				Endpoint:  peerbook.Endpoint{Host: "127.0.0.1", Port: uint16(40000 + v)},
			})
		}
		// n2's endpoint moves back and forth; n2 is not part of the stream.
		if v%2 == 1 {
			next.Peers[2].Endpoint.Port++
		}
		text := peerbook.Marshal(&next)
		if v == 25 {
			// An invalid version: n2 claims n0's address.
			text = []byte(strings.Replace(string(text), `"10.42.0.3"`, `"10.42.0.1"`, 1))
		}
		book, err := peerbook.Parse("book.toml", text)
		if err != nil {
			rejected++
			continue
		}
		for _, n := range []*Node{a, b} {
			if err := n.Reload(ctx, book); err != nil {
				t.Fatalf("reload %d: %v", v, err)
			}
		}
		applied++
		if want := len(book.Peers) - 1; len(a.Status().Peers) != want {
			t.Fatalf("reload %d: %d peers, want %d", v, len(a.Status().Peers), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rejected != 1 || applied != 49 {
		t.Errorf("rejected %d, applied %d; want 1 and 49", rejected, applied)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	r := <-got
	if r.err != nil || r.n != size {
		t.Fatalf("received %d bytes, err %v", r.n, r.err)
	}
	if [32]byte(want.Sum(nil)) != r.sum {
		t.Fatal("stream corrupted")
	}
	if after := handshakeWith(a, "n1"); !after.Equal(before) {
		t.Errorf("reloads caused a handshake: %v -> %v", before, after)
	}
}

func handshakeWith(n *Node, name string) time.Time {
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p.LastHandshake
		}
	}
	return time.Time{}
}

// deviceConfig is the part of the device's configuration a reload
// changes: each entry's key, endpoint and allowed IPs, in device order.
func deviceConfig(t *testing.T, n *Node) string {
	t.Helper()
	text, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "public_key=") || strings.HasPrefix(l, "endpoint=") || strings.HasPrefix(l, "allowed_ip=") || strings.HasPrefix(l, "listen_port=") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadRefusals: every change that needs a restart is refused with an
// error saying what changed, and the running book and device stay as they
// were, although each refused book also adds a member.
func TestReloadRefusals(t *testing.T) {
	m := newTestMesh(t, 2)
	n := m.nodes[0]
	extra, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(b *peerbook.Book)
		want string
	}{
		{"mtu", func(b *peerbook.Book) { b.Mesh.MTU = 1280 }, "mesh.mtu changed (1420 -> 1280), which needs a restart"},
		{"relay flag", func(b *peerbook.Book) { b.Peers[0].Relay = true }, "this member's relay setting changed, which needs a restart"},
		{"subnets in netstack mode", func(b *peerbook.Book) {
			b.Peers[0].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
		}, "this member now routes subnets ([192.168.77.0/24]), which in netstack mode needs a restart"},
		{"addresses", func(b *peerbook.Book) {
			b.Peers[0].Addresses = []netip.Addr{netip.MustParseAddr("10.42.0.9")}
		}, "this node's addresses changed"},
		{"book without this node", func(b *peerbook.Book) { b.Peers = b.Peers[1:] }, "this node's public key " + n.PublicKey().String() + " is not in the new book test.toml"},
	}
	running := n.Book()
	config := deviceConfig(t, n)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next := *running
			next.Serial++
			next.Peers = append([]peerbook.Peer(nil), running.Peers...)
			next.Peers = append(next.Peers, peerbook.Peer{Name: "extra", PublicKey: extra.Public(),
				Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.50")},
				Endpoint:  peerbook.Endpoint{Host: "127.0.0.1", Port: 9}})
			c.edit(&next)
			err := n.Reload(context.Background(), &next)
			if err == nil {
				t.Fatal("reload applied")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "the running book stays in force") {
				t.Errorf("error %q, want it to say %q and that the running book stays in force", err, c.want)
			}
			if n.Book() != running {
				t.Errorf("book in force changed to serial %d", n.Book().Serial)
			}
			if st := n.Status(); st.BookSerial != running.Serial || len(st.Peers) != 1 {
				t.Errorf("status: serial %d, %d peers", st.BookSerial, len(st.Peers))
			}
			if got := deviceConfig(t, n); got != config {
				t.Errorf("device changed:\n%s\nwas:\n%s", got, config)
			}
		})
	}
	// The node still works, and a good book still applies.
	serveEcho(t, m.nodes[1], "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := checkTCP(ctx, n, "n1"); err != nil {
		t.Fatal(err)
	}
	good := *running
	good.Serial++
	if err := n.Reload(ctx, &good); err != nil {
		t.Fatal(err)
	}
}
