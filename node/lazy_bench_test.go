package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/peerbook"
)

// idleNow makes every member n may idle idle at once, as if the windows
// had passed.
func (n *Node) idleNow(t testing.TB) {
	t.Helper()
	var err error
	n.do(func() {
		var dev *deviceState
		if dev, err = n.readDevice(); err != nil {
			return
		}
		// A benchmark wakes the same pair from one address hundreds of
		// times a second: not the load the per-source limit is for.
		n.lazyBind.loadN.Store(0)
		far := time.Now().Add(24 * time.Hour)
		n.lazy.observe(dev, time.Now(), n.applied, n.lazyExemptLocked()) // known to the policy
		n.lazy.observe(dev, far, n.applied, n.lazyExemptLocked())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// resetSession removes member k from n's device and configures it again,
// as a wake does, but without the lazy layer: a configured member with no
// session, the state a wake leaves.
func (n *Node) resetSession(t testing.TB, k peerbook.Key) {
	t.Helper()
	var err error
	n.do(func() {
		if err = n.lazy.remove([]peerbook.Key{k}); err == nil {
			err = n.lazy.configure(n.applied[k])
		}
	})
	if err != nil {
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

// BenchmarkLiveTransfer: one TCP stream between two live members of a
// 2-member book, and of a 1,000-member book whose 998 other members are
// idle (every packet then passes the idle-routes lookup).
func BenchmarkLiveTransfer(b *testing.B) {
	for _, size := range []int{2, 1000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			book, keys := testBook(b, size)
			for i := 2; i < size; i++ {
				a := book.Peers[i].Addresses[0].As4()
				a[2], a[3] = byte((i+1)>>8), byte(i+1)
				book.Peers[i].Addresses = []netip.Addr{netip.AddrFrom4(a)}
			}
			nodes := startNodes(b, book, keys[:2], nil, lazyWindows(time.Second, time.Second))
			m := &testMesh{book: book, keys: keys, nodes: nodes}
			m.publishEndpoints(b)
			if size > 2 {
				deadline := time.Now().Add(30 * time.Second)
				for nodes[0].lazy.nIdle.Load() < int64(size-2) || nodes[1].lazy.nIdle.Load() < int64(size-2) {
					if time.Now().After(deadline) {
						b.Fatalf("idle: %d and %d of %d", nodes[0].lazy.nIdle.Load(), nodes[1].lazy.nIdle.Load(), size-2)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			ln, err := nodes[1].Listen("tcp", ":9")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(io.Discard, c); c.Close() }()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nodes[0].Dial(ctx, "tcp", "n1:9")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			const chunk = 16 << 20
			buf := make([]byte, 64<<10)
			b.SetBytes(chunk)
			for b.Loop() {
				for sent := 0; sent < chunk; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// batchDevice returns a full batch of the packets already in the
// buffers on every Read, so that only the wrapper's work is measured.
type batchDevice struct {
	tun.Device
	size int
}

func (d *batchDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for i := range bufs {
		sizes[i] = d.size
	}
	return len(bufs), nil
}

// BenchmarkLazyDeviceRead is what lazyDevice adds per batch of 128
// packets to a live member: nothing idle, and 10,000 idle members (one
// lookup per batch whose packets share a destination, 128 when every
// packet has another one).
func BenchmarkLazyDeviceRead(b *testing.B) {
	const batch = 128
	fill := func(bufs [][]byte, distinct bool) {
		for i, p := range bufs {
			p[0] = 0x45
			copy(p[16:20], []byte{10, 42, 0, 2})
			if distinct {
				p[19] = byte(i)
			}
		}
	}
	idle := map[peerbook.Key]*idleRecord{}
	for i := range 10000 {
		var k peerbook.Key
		k[0], k[1] = byte(i), byte(i>>8)
		idle[k] = &idleRecord{cfg: &peerConfig{allowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 43, byte(i >> 8), byte(i)}), 32)}}}
	}
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, batch)
	for _, c := range []struct {
		name     string
		idle     bool
		distinct bool
	}{{"none-idle", false, false}, {"10000-idle", true, false}, {"10000-idle-distinct", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			fill(bufs, c.distinct)
			d := newLazyDevice(&batchDevice{size: 1400}, func(peerbook.Key) { b.Fatal("woke a live member") })
			if c.idle {
				d.routes.Store(newIdleRoutes(idle))
			}
			for b.Loop() {
				d.Read(bufs, sizes, 0)
			}
		})
	}
}
