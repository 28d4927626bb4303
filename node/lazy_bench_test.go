package node

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// idleNow makes every member n may idle idle at once, as if the windows
// had passed.
func (n *Node) idleNow(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	dev, err := n.readDevice()
	if err != nil {
		t.Fatal(err)
	}
	far := time.Now().Add(24 * time.Hour)
	n.lazy.observe(dev, time.Now(), n.applied, n.lazyExemptLocked()) // known to the policy
	n.lazy.observe(dev, far, n.applied, n.lazyExemptLocked())
}

// resetSession removes member k from n's device and configures it again,
// as a wake does, but without the lazy layer: a configured member with no
// session, the state a wake leaves.
func (n *Node) resetSession(t testing.TB, k peerbook.Key) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.lazy.remove([]peerbook.Key{k}); err != nil {
		t.Fatal(err)
	}
	if err := n.lazy.configure(n.applied[k]); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkFirstPacket: one UDP datagram from n1 to n0's echo and its
// answer, when the pair is idle on both sides (the datagram wakes n0 in
// n1's device, n1's initiation wakes n1 in n0's), when both sides have the
// member configured but no session (one handshake, no lazy layer), and on
// a live session. The idle case should cost what the no-session case
// does: one handshake round trip.
func BenchmarkFirstPacket(b *testing.B) {
	book, keys := testBook(b, 2)
	nodes := startNodes(b, book, keys, nil, lazyWindows(time.Hour, time.Hour))
	m := &testMesh{book: book, keys: keys, nodes: nodes}
	m.publishEndpoints(b)
	serveEcho(b, nodes[0], "n0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nodes[1].Dial(ctx, "udp4", "n0:7")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	once := func(b *testing.B) {
		if _, err := c.Write([]byte("x")); err != nil {
			b.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err != nil {
			b.Fatalf("datagram lost: %v", err)
		}
	}
	warm := func(b *testing.B) {
		// A first exchange on a fresh session, retried: not measured.
		for i := 0; ; i++ {
			c.Write([]byte("w"))
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(buf); err == nil {
				return
			} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() || i == 20 {
				b.Fatal(err)
			}
		}
	}
	k0, k1 := keys[0].Public(), keys[1].Public()
	b.Run("idle", func(b *testing.B) {
		warm(b)
		for b.Loop() {
			b.StopTimer()
			nodes[0].idleNow(b)
			nodes[1].idleNow(b)
			if !nodes[1].lazy.anyIdle() || !nodes[0].lazy.anyIdle() {
				b.Fatal("pair not idle")
			}
			b.StartTimer()
			once(b)
		}
	})
	b.Run("no-session", func(b *testing.B) {
		warm(b)
		for b.Loop() {
			b.StopTimer()
			nodes[0].resetSession(b, k1)
			nodes[1].resetSession(b, k0)
			b.StartTimer()
			once(b)
		}
	})
	b.Run("session", func(b *testing.B) {
		warm(b)
		for b.Loop() {
			once(b)
		}
	})
}
