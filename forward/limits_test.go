package forward

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestTCPConnectionCap: a forward used to relay any number of
// connections; over its limits they are now closed at once.
func TestTCPConnectionCap(t *testing.T) {
	checkGoroutines(t)
	if defaultTCPLimits.Total == 0 || defaultTCPLimits.PerClient == 0 {
		t.Fatalf("ServeTCP has no default limits: %+v", defaultTCPLimits)
	}
	target := startTCPServer(t, "tcp", "127.0.0.1:0", echo)
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	log := newTestLogger(t)
	s := newTCPServer(&net.Dialer{}, target.Addr().String(), log.Logger)
	s.limits = netutil.Limits{Total: 3, PerClient: 2}
	ctx, cancel := context.WithCancel(t.Context())
	wait := serveResult(t, func() error { return s.serve(ctx, ln) })
	defer func() {
		cancel()
		if err := wait(); err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	}()

	dialFrom := func(src string) net.Conn { return testutil.DialFrom(t, "tcp", src, ln.Addr().String()) }
	works := func(c net.Conn) bool {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return false
		}
		_, err := c.Read(make([]byte, 1))
		return err == nil
	}
	a1, a2 := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	if !works(a1) || !works(a2) {
		t.Fatal("connections within the limits are not relayed")
	}
	for range 5 {
		if c := dialFrom("127.0.0.1"); !testutil.ClosedWithin(c, 5*time.Second) {
			t.Fatal("a third connection of one client was relayed beyond the per-client limit of 2")
		}
	}
	b1 := dialFrom("127.0.0.2")
	if !works(b1) {
		t.Fatal("another client was refused")
	}
	if c := dialFrom("127.0.0.3"); !testutil.ClosedWithin(c, 5*time.Second) {
		t.Fatal("a fourth connection was relayed beyond the total limit of 3")
	}
	if n := strings.Count(log.String(), "connection refused"); n != 1 {
		t.Errorf("%d log lines for 6 refusals, want 1 (at most one per 10 s):\n%s", n, log)
	}
	a1.Close()
	waitFor(t, "a closed connection to free its place", func() bool {
		c := dialFrom("127.0.0.1")
		defer c.Close()
		return works(c)
	})
}

// TestUDPSessionsPerClient: one client address with many source ports
// could take every session of a UDP forward.
func TestUDPSessionsPerClient(t *testing.T) {
	checkGoroutines(t)
	if maxUDPSessionsPerClient >= maxUDPSessions {
		t.Fatalf("per-client limit %d does not bound a client below the total %d", maxUDPSessionsPerClient, maxUDPSessions)
	}
	echo := startUDPEcho(t, "udp", "127.0.0.1:0")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := newTestLogger(t)
	s := newUDPServer(&net.Dialer{}, echo.addr(), 0, 100, log.Logger)
	s.perClient = netutil.NewCounter(netutil.Limits{PerClient: 2})
	ctx, cancel := context.WithCancel(t.Context())
	wait := serveResult(t, func() error { return s.serve(ctx, pc) })
	stop := func() error {
		cancel()
		return wait()
	}
	t.Cleanup(cancel)
	dialFrom := func(src string) net.Conn { return testutil.DialFrom(t, "udp", src, pc.LocalAddr().String()) }
	mustExchange(t, dialFrom("127.0.0.1"), "one")
	mustExchange(t, dialFrom("127.0.0.1"), "two")
	for i := range 3 {
		if reply, err := exchange(dialFrom("127.0.0.1"), "more", 200*time.Millisecond); err == nil {
			t.Fatalf("port %d of one client got %q beyond the per-client limit", i+3, reply)
		}
	}
	mustExchange(t, dialFrom("127.0.0.2"), "other client")
	if n := s.sessionCount(); n != 3 {
		t.Errorf("sessionCount = %d, want 3", n)
	}
	if n := strings.Count(log.String(), "too many udp sessions of one client"); n != 1 {
		t.Errorf("%d log lines for 3 refusals, want 1:\n%s", n, log)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeUDP: %v", err)
	}
}
