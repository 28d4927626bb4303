package proxy

import (
	"context"
	"errors"
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
	dialTimeout = 10 * time.Second
	// copyBufferSize is large because through a userspace stack each
	// Read/Write costs far more than through the kernel.
	copyBufferSize   = 256 << 10
	maxAcceptBackoff = time.Second
)

var (
	errConnRefused = syscall.ECONNREFUSED
	errNetUnreach  = syscall.ENETUNREACH
	errHostUnreach = syscall.EHOSTUNREACH
)

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// closeWriter is implemented by connections that can shut down their writing
// half: *net.TCPConn and gVisor's gonet.TCPConn among others.
type closeWriter interface {
	CloseWrite() error
}

// relay copies both ways between a and b until both directions end, passing
// half-closes on, and returns the bytes copied from a to b and from b to a.
func relay(a, b net.Conn) (int64, int64, error) {
	var (
		wg      sync.WaitGroup
		ab, ba  int64
		abError error
	)
	wg.Go(func() { ab, abError = pipe(b, a) })
	ba, baError := pipe(a, b)
	wg.Wait()
	return ab, ba, errors.Join(abError, baError)
}

// pipe copies src to dst until EOF, then half-closes dst so its reader sees
// EOF while the other direction goes on. On an error, or when dst cannot
// half-close, it closes both conns, which also ends the other direction.
func pipe(dst, src net.Conn) (int64, error) {
	n, err := copyConn(dst, src)
	if err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return n, nil
		}
	}
	dst.Close()
	src.Close()
	return n, err
}

func copyConn(dst, src net.Conn) (int64, error) {
	_, srcTCP := src.(*net.TCPConn)
	_, dstTCP := dst.(*net.TCPConn)
	if srcTCP && dstTCP {
		return io.Copy(dst, src) // lets the kernel splice
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	// Hide ReaderFrom/WriterTo: the net package's fallbacks would copy
	// through their own 32 KiB buffer instead of ours.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}

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
