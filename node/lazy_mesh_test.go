package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// lazyWindows shortens the idle windows of the nodes of a test mesh. Both
// windows are far below WireGuard's session lifetime here, so both sides
// of a pair must have gone idle before a test sends: a member idle on one
// side only would still hold a session the other side no longer has.
func lazyWindows(quiet, unanswered time.Duration) func(*Node) {
	return func(n *Node) { n.lazyQuietAfter, n.lazyUnansweredAfter = quiet, unanswered }
}

func newLazyMesh(t *testing.T, size int) *testMesh {
	t.Helper()
	book, keys := testBook(t, size)
	m := &testMesh{book: book, keys: keys}
	m.nodes = startNodes(t, book, keys, nil, lazyWindows(2*time.Second, 2*time.Second))
	m.publishEndpoints(t)
	return m
}

// waitPath waits, bounded and in real time, until n's path to name is
// want.
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

// waitIdlePair waits until a and b each show the other idle.
func waitIdlePair(t *testing.T, m *testMesh, a, b int) {
	t.Helper()
	waitPath(t, m.nodes[a], m.book.Peers[b].Name, PathIdle, 30*time.Second)
	waitPath(t, m.nodes[b], m.book.Peers[a].Name, PathIdle, 30*time.Second)
}

func TestLazyPeersWakeOnFirstPacket(t *testing.T) {
	m := newLazyMesh(t, 3)
	for i, n := range m.nodes {
		serveEcho(t, n, m.book.Peers[i].Name)
	}
	// A live transfer n0 -> n2 runs throughout: n2 never goes idle, and
	// what arrives is what was sent.
	transfer := startTransfer(t, m.nodes[0], m.nodes[2], "n2")

	waitIdlePair(t, m, 0, 1)
	st := mustPeerStatus(t, m.nodes[0], "n1")
	if st.Endpoint == "" || st.LastHandshake.IsZero() && st.TxBytes == 0 {
		t.Errorf("idle member's status lost its facts: %+v", st)
	}
	if m.nodes[0].lazy.nIdle.Load() != 1 {
		t.Errorf("n0 has %d idle members, want 1 (n1)", m.nodes[0].lazy.nIdle.Load())
	}

	// One datagram from n1 to idle n0, sent once: it must arrive (and the
	// echo come back) after one handshake, not be lost.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := m.nodes[1].Dial(ctx, "udp4", "n0:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := time.Now()
	if _, err := c.Write([]byte("once")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(4 * time.Second))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil || string(buf[:k]) != "n0:once" {
		t.Fatalf("single datagram to an idle member: reply %q, %v", buf[:k], err)
	}
	t.Logf("first datagram to an idle member answered after %v", time.Since(sent).Round(time.Millisecond))
	if p := pathTo(m.nodes[0], "n1"); p == PathIdle {
		// Status is up to one tick old; the device has n1 again.
		if _, ok := m.nodes[0].lazy.view.Load().isIdle(m.nodes[1].PublicKey()); ok {
			t.Fatal("n1 still idle on n0 after its initiation")
		}
	}

	// Idle again; now a TCP connection from n0 to n1.
	waitIdlePair(t, m, 0, 1)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := checkTCP(ctx2, m.nodes[0], "n1"); err != nil {
		t.Fatalf("TCP to an idle member: %v", err)
	}
	if got := pathTo(m.nodes[0], "n2"); got == PathIdle {
		t.Fatal("the member with a live transfer went idle")
	}
	transfer.check(t)
}

func mustPeerStatus(t *testing.T, n *Node, name string) PeerStatus {
	t.Helper()
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("%s not in status", name)
	return PeerStatus{}
}

// transfer is a bounded stream from one node to another's port 9 that
// the receiver hashes.
type transfer struct {
	sent, got chan [32]byte
	stop      chan struct{}
}

func startTransfer(t *testing.T, from, to *Node, toName string) *transfer {
	t.Helper()
	ln, err := to.Listen("tcp", ":9")
	if err != nil {
		t.Fatal(err)
	}
	tr := &transfer{sent: make(chan [32]byte, 1), got: make(chan [32]byte, 1), stop: make(chan struct{})}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		tr.got <- [32]byte(h.Sum(nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	c, err := from.Dial(ctx, "tcp", toName+":9")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		defer c.Close()
		h := sha256.New()
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
		// At most 2,000 chunks, one every 20 ms, until stopped.
		for i := 0; i < 2000; i++ {
			chunk[0] = byte(i)
			if _, err := c.Write(chunk); err != nil {
				break
			}
			h.Write(chunk)
			select {
			case <-tr.stop:
				tr.sent <- [32]byte(h.Sum(nil))
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		tr.sent <- [32]byte(h.Sum(nil))
	}()
	return tr
}

// check stops the transfer and compares the hashes of both ends.
func (tr *transfer) check(t *testing.T) {
	t.Helper()
	close(tr.stop)
	sent := <-tr.sent
	select {
	case got := <-tr.got:
		if got != sent {
			t.Fatal("live transfer corrupted: hashes differ")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("live transfer did not finish")
	}
}
