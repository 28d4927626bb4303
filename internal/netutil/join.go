package netutil

import (
	"errors"
	"io"
	"net"
	"sync"
)

// CopyBufferSize is the buffer each direction of Join copies through. It
// is large because through a userspace stack each Read/Write costs far
// more than through the kernel.
const CopyBufferSize = 256 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, CopyBufferSize); return &b }}

// closeWriter is implemented by connections that can shut down their
// writing half: *net.TCPConn, *net.UnixConn, *tls.Conn and gVisor's
// gonet.TCPConn.
type closeWriter interface {
	CloseWrite() error
}

// Join copies both ways between a and b until both directions end,
// passing half-closes on, and returns the bytes copied from a to b and from
// b to a. On an error in either direction both conns are closed.
func Join(a, b net.Conn) (ab, ba int64, err error) {
	var (
		wg    sync.WaitGroup
		abErr error
	)
	wg.Go(func() { ab, abErr = pipe(b, a) })
	ba, baErr := pipe(a, b)
	wg.Wait()
	return ab, ba, errors.Join(abErr, baErr)
}

// pipe copies src to dst until EOF, then half-closes dst so its reader
// sees EOF while the other direction goes on. On an error, or when dst
// cannot half-close, it closes both conns, which also ends the other
// direction.
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

// tcpWriterTo and tcpReaderFrom are conns that copy to or from a host
// TCP socket without a copy buffer in between: netstack's TCP conns, which
// read the socket into the stack's buffers and write the stack's buffers
// to the socket.
type tcpWriterTo interface {
	WriteToTCP(*net.TCPConn) (int64, error)
}

type tcpReaderFrom interface {
	ReadFromTCP(*net.TCPConn) (int64, error)
}

func copyConn(dst, src net.Conn) (int64, error) {
	sc, dc := tcpOf(src), tcpOf(dst)
	if sc != nil && dc != nil {
		return io.Copy(dc, sc) // lets the kernel splice
	}
	if w, ok := unwrapLimit(src).(tcpWriterTo); ok && dc != nil {
		return w.WriteToTCP(dc)
	}
	if r, ok := unwrapLimit(dst).(tcpReaderFrom); ok && sc != nil {
		return r.ReadFromTCP(sc)
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	// Hide ReaderFrom/WriterTo: the net package's fallbacks would copy
	// through their own 32 KiB buffer instead of ours.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}

// tcpOf returns the *net.TCPConn under c and LimitListener's wrapper, or
// nil.
func tcpOf(c net.Conn) *net.TCPConn {
	tc, _ := unwrapLimit(c).(*net.TCPConn)
	return tc
}

// unwrapLimit returns the conn under LimitListener's wrapper, or c.
func unwrapLimit(c net.Conn) net.Conn {
	if lc, ok := c.(*limitConn); ok {
		return lc.Conn
	}
	return c
}
