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
