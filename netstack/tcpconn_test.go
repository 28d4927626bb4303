package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

func TestPathBufferMax(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		want int64
	}{
		{0, bufferFloor}, // not measured yet
		{300 * time.Microsecond, bufferFloor},
		{5 * time.Millisecond, bufferFloor},
		{10 * time.Millisecond, 3_750_000},
		{20 * time.Millisecond, 7_500_000},
		{50 * time.Millisecond, bufferCeiling},
		{time.Second, bufferCeiling},
	} {
		if got := pathBufferMax(c.rtt); got != c.want {
			t.Errorf("pathBufferMax(%v) = %d, want %d", c.rtt, got, c.want)
		}
	}
}

// receiveBuffer reads a conn's receive buffer size.
func receiveBuffer(t *testing.T, c net.Conn) int64 {
	t.Helper()
	tc, ok := c.(*tcpConn)
	if !ok {
		t.Fatalf("conn is a %T, want a *tcpConn", c)
	}
	return tc.ops.GetReceiveBufferSize()
}

// moveBulk copies n bytes from src to dst and checks they all arrive.
func moveBulk(t *testing.T, src, dst net.Conn, n int64) {
	t.Helper()
	done := make(chan int64, 1)
	go func() {
		got, _ := io.CopyBuffer(io.Discard, io.LimitReader(dst, n), make([]byte, 256<<10))
		done <- got
	}()
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < n; sent += int64(len(buf)) {
		if _, err := src.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-done:
		if got != n {
			t.Fatalf("received %d bytes, sent %d", got, n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("bulk transfer did not finish in 60 s")
	}
}

// warmUp has each stack of p send a SYN to a closed port of the other, so
// that WireGuard's handshake is done before the test's connection: a SYN
// that waits for it shows gVisor a round trip of the two handshakes.
func warmUp(t *testing.T, p *wgPair) {
	t.Helper()
	for _, c := range []struct {
		from *Stack
		to   netip.Addr
	}{{p.a, p.addrB}, {p.b, p.addrA}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := c.from.DialTCP(ctx, netip.AddrPortFrom(c.to, 9))
		cancel()
		if err == nil {
			conn.Close()
			t.Fatalf("a connection to port 9 of %s was accepted", c.to)
		}
	}
}

// On a short path gVisor grows a bulk receiver's buffer to the stack-wide
// maximum (8 MiB); the conn keeps it at the short path's.
func TestPathBuffersShortPath(t *testing.T) {
	for _, dir := range []string{"dialer-sends", "acceptor-sends"} {
		p := newWGPair(t, false)
		warmUp(t, p)
		client, server := p.stream(t)
		src, dst := client, server
		if dir == "acceptor-sends" {
			src, dst = server, client
		}
		moveBulk(t, src, dst, 256<<20)
		rcv := receiveBuffer(t, dst)
		t.Logf("%s: receive buffer %d", dir, rcv)
		// A loaded machine may see a few ms of round trip, and 4 MiB is
		// the maximum of a 11 ms path, far above this one's.
		if rcv > 4<<20 {
			t.Errorf("%s: receive buffer %d bytes after 256 MiB on a short path; want at most 4 MiB", dir, rcv)
		}
	}
}

// On a 50 ms path a stream needs more than gVisor's default 4 MiB maximum:
// the conn lets its buffers grow to the ceiling.
func TestPathBuffersLongPath(t *testing.T) {
	const oneWay = 25 * time.Millisecond
	p := newWGPairWith(t, false, func(s *Stack) tun.Device { return newLossy(s, oneWay, 0) })
	client, server := p.stream(t)
	moveBulk(t, client, server, 96<<20)
	rcv := receiveBuffer(t, server)
	t.Logf("receive buffer %d", rcv)
	if rcv <= 4<<20 || rcv > bufferCeiling {
		t.Errorf("receive buffer %d bytes after 96 MiB over a 50 ms path; want above gVisor's default 4 MiB maximum, at most %d", rcv, bufferCeiling)
	}
}

// The stack's own listener and dial: a blocked Accept ends with
// net.ErrClosed on Close, a dial to a closed port is refused as a connect
// error, and a cancelled dial returns the context's error.
func TestListenerCloseAndDialErrors(t *testing.T) {
	p := newWGPair(t, false)
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(p.addrB, 7000))
	if err != nil {
		t.Fatal(err)
	}
	if got := ln.Addr().(*net.TCPAddr).AddrPort(); got != netip.AddrPortFrom(p.addrB, 7000) {
		t.Errorf("listener on %v, want %v:7000", got, p.addrB)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond) // Accept is waiting
	ln.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked 5 s after Close")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.a.DialTCP(ctx, netip.AddrPortFrom(p.addrB, 7000))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "connect" {
		t.Errorf("dial to a closed port: %v, want a connect error", err)
	}
	cancelled, stop := context.WithCancel(context.Background())
	stop()
	if _, err := p.a.DialTCP(cancelled, netip.AddrPortFrom(p.addrB, 7000)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled dial: %v, want context.Canceled", err)
	}
}
