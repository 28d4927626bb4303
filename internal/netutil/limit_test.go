package netutil

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

func TestCounter(t *testing.T) {
	c := NewCounter(Limits{Total: 3, PerClient: 2})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for range 2 {
		if err := c.Acquire(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Acquire(netip.MustParseAddr("::ffff:192.0.2.1")); err == nil || !strings.Contains(err.Error(), "2 per client") {
		t.Fatalf("third for one client (as a mapped address): %v", err)
	}
	if err := c.Acquire(b); err != nil {
		t.Fatal(err)
	}
	if err := c.Acquire(netip.MustParseAddr("192.0.2.3")); err == nil || !strings.Contains(err.Error(), "3 in total") {
		t.Fatalf("fourth in total: %v", err)
	}
	c.Release(a)
	if err := c.Acquire(netip.MustParseAddr("192.0.2.3")); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if c.Total() != 3 {
		t.Fatalf("total %d", c.Total())
	}
}

// acceptAll serves ln, keeping every accepted conn open until the test
// ends, and returns the accepted conns as they come.
func acceptAll(t *testing.T, ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ch
}

func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	refused := NewRateLog(slog.New(slog.NewTextHandler(&logs, nil)), time.Hour)
	ln := LimitListener(raw, Limits{Total: 2}, refused)
	accepted := acceptAll(t, ln)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1, c2 := dial(), dial()
	s1, s2 := <-accepted, <-accepted
	_ = c2
	// Over the cap: closed at once, never handed to the server.
	for range 3 {
		if c := dial(); !testutil.ClosedWithin(c, 5*time.Second) {
			t.Fatal("a connection over the cap was not closed")
		}
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection over the cap reached the server: %v", c.RemoteAddr())
	default:
	}
	// The refusals are logged once within the interval.
	if n := strings.Count(logs.String(), "connection refused"); n != 1 {
		t.Fatalf("%d log lines for 3 refusals:\n%s", n, logs.String())
	}
	// A closed conn frees its place (twice closed, counted once).
	s1.Close()
	s1.Close()
	if !testutil.ClosedWithin(c1, 5*time.Second) {
		t.Fatal("closing the server side did not close the client")
	}
	dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no room after a connection closed")
	}
	if c := dial(); !testutil.ClosedWithin(c, 5*time.Second) {
		t.Fatal("the cap is not enforced after a close")
	}
	s2.Close()
}

func TestLimitListenerPerClient(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, Limits{Total: 10, PerClient: 1}, nil)
	accepted := acceptAll(t, ln)
	dialFrom := func(src string) net.Conn { return testutil.DialFrom(t, "tcp", src, raw.Addr().String()) }
	dialFrom("127.0.0.1")
	<-accepted
	if c := dialFrom("127.0.0.1"); !testutil.ClosedWithin(c, 5*time.Second) {
		t.Fatal("a second connection of one client was not refused")
	}
	dialFrom("127.0.0.2") // another client (all of 127/8 is loopback on Linux)
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("another client was refused")
	}
}

// Join through the wrapper still passes half-closes on.
func TestLimitConnHalfClose(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, Limits{Total: 1}, nil)
	accepted := acceptAll(t, ln)
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	cw, ok := s.(closeWriter)
	if !ok {
		t.Fatal("the wrapped conn cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %v, want EOF", err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the other direction ended with the half-close: %v", err)
	}
	s.Close()
}

func TestRateLog(t *testing.T) {
	var logs bytes.Buffer
	r := NewRateLog(slog.New(slog.NewTextHandler(&logs, nil)), time.Minute)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 100 {
		r.Log("refused", "client", "192.0.2.1")
	}
	now = now.Add(time.Minute)
	r.Log("refused", "client", "192.0.2.9")
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 101 events in two intervals:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(lines[1], "more_not_logged=99") || !strings.Contains(lines[1], "192.0.2.9") {
		t.Fatalf("second line does not count the 99 left out: %s", lines[1])
	}
	var nilLog *RateLog
	nilLog.Log("nothing") // must not panic
}
