package forward

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// dialerFunc adapts a function to Dialer.
type dialerFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// testLogger logs at debug level to the test's output and to a buffer the
// test can inspect.
type testLogger struct {
	*slog.Logger
	mu  sync.Mutex
	buf bytes.Buffer
}

func newTestLogger(t *testing.T) *testLogger {
	l := &testLogger{}
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	l.Logger = slog.New(slog.NewTextHandler(lockedWriter{l, t}, opts))
	return l
}

type lockedWriter struct {
	l *testLogger
	t *testing.T
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.l.buf.Write(p)
	w.t.Output().Write(p)
	return len(p), nil
}

func (l *testLogger) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// checkGoroutines records the goroutine count and fails the test unless the
// count comes back down to it once the test and its other cleanups are done.
// Call it first, so its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		var n int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= base {
				return
			}
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d running, want at most %d\n%s", n, base, buf)
	})
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// serveResult runs serve in a goroutine and returns a function that waits for
// its result.
func serveResult(t *testing.T, serve func() error) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- serve() }()
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("serve did not return")
			return nil
		}
	}
}

// listenTCP listens on loopback port 0 of the given family and closes the
// listener when the test ends.
func listenTCP(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// tcpServer runs handle for each connection accepted on a loopback port and
// stops, waiting for its handlers, when the test ends.
func startTCPServer(t *testing.T, network, addr string, handle func(*net.TCPConn)) net.Listener {
	t.Helper()
	ln := listenTCP(t, network, addr)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

func ipv6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}

func (l *testLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
