package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// udpEcho answers every datagram with "echo:" and the datagram, and counts
// the distinct source addresses it has heard from: one per relay session.
type udpEcho struct {
	pc      net.PacketConn
	mu      sync.Mutex
	sources map[string]bool
}

func startUDPEcho(t *testing.T, network, addr string) *udpEcho {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{pc: pc, sources: make(map[string]bool)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.sources[from.String()] = true
			e.mu.Unlock()
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return e
}

func (e *udpEcho) addr() string { return e.pc.LocalAddr().String() }

func (e *udpEcho) sourceCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sources)
}

func startUDPForward(t *testing.T, network, listen, target string, d Dialer, idle time.Duration, maxSessions int) (net.PacketConn, *udpServer, *testLogger, func() error) {
	t.Helper()
	pc, err := net.ListenPacket(network, listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	log := newTestLogger(t)
	ctx, cancel := context.WithCancel(t.Context())
	s := newUDPServer(d, target, idle, maxSessions, log.Logger)
	wait := serveResult(t, func() error { return s.serve(ctx, pc) })
	t.Cleanup(cancel)
	return pc, s, log, func() error {
		cancel()
		return wait()
	}
}

func dialUDP(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg and returns the reply, or an error if none comes.
func exchange(c net.Conn, msg string, wait time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func mustExchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	got, err := exchange(c, msg, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: sending %q: %v", c.LocalAddr(), msg, err)
	}
	if want := "echo:" + msg; got != want {
		t.Fatalf("%s: reply %q, want %q", c.LocalAddr(), got, want)
	}
}

func TestUDPClientsGetTheirOwnReplies(t *testing.T) {
	checkGoroutines(t)
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, s, _, stop := startUDPForward(t, "udp", "127.0.0.1:0", echo.addr(), &net.Dialer{}, 0, maxUDPSessions)

	a, b := dialUDP(t, pc.LocalAddr()), dialUDP(t, pc.LocalAddr())
	for i := range 5 {
		mustExchange(t, a, fmt.Sprintf("a%d", i))
		mustExchange(t, b, fmt.Sprintf("b%d", i))
	}
	// Both clients send before either reads: each reply must still go to
	// its own client.
	for i := range 5 {
		a.Write(fmt.Appendf(nil, "A%d", i))
		b.Write(fmt.Appendf(nil, "B%d", i))
	}
	for _, c := range []struct {
		conn   net.Conn
		prefix string
	}{{a, "A"}, {b, "B"}} {
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		for i := range 5 {
			n, err := c.conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(buf[:n]), fmt.Sprintf("echo:%s%d", c.prefix, i); got != want {
				t.Errorf("client %s got %q, want %q", c.prefix, got, want)
			}
		}
	}
	if n := s.sessionCount(); n != 2 {
		t.Errorf("sessionCount = %d, want 2", n)
	}
	if n := echo.sourceCount(); n != 2 {
		t.Errorf("target heard from %d sources, want 2 (one per client)", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}

func TestUDPIdleSessionsExpire(t *testing.T) {
	checkGoroutines(t)
	const idle = 200 * time.Millisecond
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, s, _, stop := startUDPForward(t, "udp", "127.0.0.1:0", echo.addr(), &net.Dialer{}, idle, maxUDPSessions)

	c := dialUDP(t, pc.LocalAddr())
	start := time.Now()
	mustExchange(t, c, "first")
	if n := s.sessionCount(); n != 1 {
		t.Fatalf("sessionCount = %d, want 1", n)
	}
	waitFor(t, "the idle session to expire", func() bool { return s.sessionCount() == 0 })
	if d := time.Since(start); d < idle {
		t.Errorf("session expired after %v, before the idle time %v", d, idle)
	}
	// The client is not forgotten for good: its next datagram starts a new
	// session.
	mustExchange(t, c, "again")
	if n := s.sessionCount(); n != 1 {
		t.Errorf("sessionCount = %d, want 1", n)
	}
	if n := echo.sourceCount(); n != 2 {
		t.Errorf("target heard from %d sources, want 2 (a new session after expiry)", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}

func TestUDPTrafficKeepsSessionAlive(t *testing.T) {
	checkGoroutines(t)
	// Traffic every idle/10 for longer than idle: generous, so a slow
	// machine does not let the session lapse between datagrams.
	const idle = 400 * time.Millisecond
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, s, _, stop := startUDPForward(t, "udp", "127.0.0.1:0", echo.addr(), &net.Dialer{}, idle, maxUDPSessions)

	c := dialUDP(t, pc.LocalAddr())
	for start := time.Now(); time.Since(start) < 2*idle; time.Sleep(idle / 10) {
		mustExchange(t, c, "ping")
	}
	if n := echo.sourceCount(); n != 1 {
		t.Errorf("target heard from %d sources, want 1: the session expired despite traffic", n)
	}
	if n := s.sessionCount(); n != 1 {
		t.Errorf("sessionCount = %d, want 1", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}

func TestUDPSessionLimit(t *testing.T) {
	checkGoroutines(t)
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, s, log, stop := startUDPForward(t, "udp", "127.0.0.1:0", echo.addr(), &net.Dialer{}, 0, 2)

	mustExchange(t, dialUDP(t, pc.LocalAddr()), "one")
	mustExchange(t, dialUDP(t, pc.LocalAddr()), "two")
	if reply, err := exchange(dialUDP(t, pc.LocalAddr()), "three", 300*time.Millisecond); err == nil {
		t.Errorf("third client got %q beyond the session limit", reply)
	}
	if n := s.sessionCount(); n != 2 {
		t.Errorf("sessionCount = %d, want 2", n)
	}
	if !log.contains("too many udp sessions") {
		t.Errorf("dropped client not logged:\n%s", log)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}

func TestUDPDialFailureEndsSession(t *testing.T) {
	checkGoroutines(t)
	var dials atomic.Int32
	fail := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network != "udp" {
			t.Errorf("dialed network %q, want udp", network)
		}
		dials.Add(1)
		return nil, errors.New("no route to beta")
	})
	pc, s, log, stop := startUDPForward(t, "udp", "127.0.0.1:0", "beta:53", fail, 0, maxUDPSessions)

	c := dialUDP(t, pc.LocalAddr())
	c.Write([]byte("q1"))
	waitFor(t, "the first dial", func() bool { return dials.Load() == 1 })
	waitFor(t, "the failed session to end", func() bool { return s.sessionCount() == 0 })
	if !log.contains(`msg="dial failed, dropping udp session"`) {
		t.Errorf("dial failure not logged:\n%s", log)
	}
	c.Write([]byte("q2"))
	waitFor(t, "a second dial for the next datagram", func() bool { return dials.Load() == 2 })
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}

func TestUDPShutdownEndsSessions(t *testing.T) {
	checkGoroutines(t)
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, s, _, stop := startUDPForward(t, "udp", "127.0.0.1:0", echo.addr(), &net.Dialer{}, 0, maxUDPSessions)
	for i := range 10 {
		mustExchange(t, dialUDP(t, pc.LocalAddr()), fmt.Sprint(i))
	}
	if n := s.sessionCount(); n != 10 {
		t.Errorf("sessionCount = %d, want 10", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
	if n := s.sessionCount(); n != 0 {
		t.Errorf("sessionCount after shutdown = %d, want 0", n)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("packet conn not closed after shutdown: ReadFrom error %v", err)
	}
}

func TestUDPReturnsWhenPacketConnClosed(t *testing.T) {
	checkGoroutines(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wait := serveResult(t, func() error {
		return ServeUDP(t.Context(), pc, &net.Dialer{}, "127.0.0.1:1", 0, nil)
	})
	pc.Close()
	if err := wait(); err != nil {
		t.Fatalf("ServeUDP = %v, want nil", err)
	}
}

func TestUDPDefaultIdle(t *testing.T) {
	if s := newUDPServer(&net.Dialer{}, "beta:53", 0, maxUDPSessions, nil); s.idle != DefaultUDPIdle {
		t.Errorf("idle = %v, want %v", s.idle, DefaultUDPIdle)
	}
}

func TestUDPIPv6(t *testing.T) {
	ipv6Loopback(t)
	checkGoroutines(t)
	echo := startUDPEcho(t, "udp6", "[::1]:0")
	pc, _, _, stop := startUDPForward(t, "udp6", "[::1]:0", echo.addr(), &net.Dialer{}, 0, maxUDPSessions)
	mustExchange(t, dialUDP(t, pc.LocalAddr()), "over ipv6")
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}
