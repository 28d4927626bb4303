package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// handshakeTimeout bounds a client's SOCKS5 negotiation, so a client that
// connects and says nothing does not hold a goroutine for ever. Tests
// shorten it.
var handshakeTimeout = 10 * time.Second

const (
	// dialTimeout bounds each dial into the mesh.
	dialTimeout      = 10 * time.Second
	maxAcceptBackoff = time.Second
)

var (
	errConnRefused = syscall.ECONNREFUSED
	errNetUnreach  = syscall.ENETUNREACH
	errHostUnreach = syscall.EHOSTUNREACH
)

// tracker remembers the listeners, connections and sockets a server owns,
// so that Close can close them all and wait for its goroutines.
type tracker struct {
	mu      sync.Mutex
	closers map[io.Closer]struct{}
	closed  bool
	wg      sync.WaitGroup
	ctx     context.Context // cancelled by Close; aborts dials in flight
	cancel  context.CancelFunc
}

func (t *tracker) initLocked() {
	if t.closers == nil {
		t.closers = make(map[io.Closer]struct{})
		t.ctx, t.cancel = context.WithCancel(context.Background())
	}
}

// context returns a context that Close cancels.
func (t *tracker) context() context.Context {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	return t.ctx
}

// track adds c, or reports false (and leaves c to the caller) after Close.
func (t *tracker) track(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	if t.closed {
		return false
	}
	t.closers[c] = struct{}{}
	return true
}

// release forgets c and closes it.
func (t *tracker) release(c io.Closer) {
	t.mu.Lock()
	delete(t.closers, c)
	t.mu.Unlock()
	c.Close()
}

// goTracked tracks c and runs fn in a goroutine that Close waits for; after
// Close it closes c and reports false instead.
func (t *tracker) goTracked(c io.Closer, fn func()) bool {
	t.mu.Lock()
	t.initLocked()
	if t.closed {
		t.mu.Unlock()
		c.Close()
		return false
	}
	t.closers[c] = struct{}{}
	t.wg.Add(1) // under mu, so Close's Wait cannot miss it
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		defer t.release(c)
		fn()
	}()
	return true
}

func (t *tracker) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// close closes everything tracked and waits for the goroutines. It reports
// false if it had already run.
func (t *tracker) close() bool {
	t.mu.Lock()
	t.initLocked()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	t.closed = true
	t.cancel()
	closers := make([]io.Closer, 0, len(t.closers))
	for c := range t.closers {
		closers = append(closers, c)
	}
	t.mu.Unlock()
	// Close outside mu: some closers untrack themselves.
	for _, c := range closers {
		c.Close()
	}
	t.wg.Wait()
	return true
}

// count returns how many closers are tracked, for tests.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.closers)
}

// serve accepts connections on ln and runs handle for each in a tracked
// goroutine. It returns nil once the tracker is closed, and an error for an
// accept failure that is not temporary.
func (t *tracker) serve(ln net.Listener, log *slog.Logger, what string, handle func(net.Conn)) error {
	if !t.track(ln) {
		ln.Close()
		return fmt.Errorf("%s: serve: %w", what, net.ErrClosed)
	}
	defer t.release(ln)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			// gVisor's listener reports its own error after Close,
			// so ask the tracker rather than the error.
			if t.isClosed() {
				return nil
			}
			if !netutil.Temporary(err) {
				return fmt.Errorf("%s: accept: %w", what, err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			log.Warn("accept failed, retrying", "err", err, "retry_in", backoff)
			if !netutil.Sleep(t.context(), backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		if !t.goTracked(c, func() { handle(c) }) {
			return nil
		}
	}
}
