package netstack

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Copies between a stack TCP conn and a host TCP socket (--forward,
// --expose, the proxies) without a copy buffer in between: the host
// socket's bytes are read straight into the stack's buffers, and the
// stack's received bytes are written to the socket from where they lie.
// Through a buffer, every byte was copied once more in user space on
// each side (bench/README.md, "Host sockets without a copy buffer").

// maxIovecs bounds the stack buffers one writev hands the kernel (IOV_MAX
// is 1024); maxPeekBytes bounds the bytes.
const (
	maxIovecs    = 256
	maxPeekBytes = 1 << 20
)

var (
	errPeekFull    = errors.New("netstack: peek batch full")
	errConsumed    = errors.New("netstack: consumed")
	errShortSocket = errors.New("netstack: host socket held fewer bytes than it reported")
)

// peekBatch collects, without copying, the slices of received data a
// peeking Read passes it. They stay valid while the data is unread and the
// endpoint is open: Stack.copies, held from the peek until the data is
// consumed, keeps Close (which frees the buffers) out.
type peekBatch struct {
	bufs [][]byte
	size int
}

func (p *peekBatch) Write(b []byte) (int, error) {
	if p.full() {
		return 0, errPeekFull
	}
	p.bufs = append(p.bufs, b)
	p.size += len(b)
	return len(b), nil
}

// full reports whether the batch takes no more slices.
func (p *peekBatch) full() bool { return len(p.bufs) == maxIovecs || p.size >= maxPeekBytes }

// consumer takes exactly left bytes from a Read and refuses the rest.
type consumer struct{ left int }

func (c *consumer) Write(b []byte) (int, error) {
	if len(b) <= c.left {
		c.left -= len(b)
		return len(b), nil
	}
	n := c.left
	c.left = 0
	return n, errConsumed
}

// WriteToTCP copies what the conn receives to dst until the peer's end of
// stream, as io.Copy(dst, c) would.
func (c *tcpConn) WriteToTCP(dst *net.TCPConn) (int64, error) {
	rc, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	batch := &peekBatch{bufs: make([][]byte, 0, maxIovecs)}
	iovs := make([]unix.Iovec, 0, maxIovecs)
	var total int64
	for {
		var (
			wrote   int
			waitFor bool // nothing to send yet
			drained bool // the kernel took all the stack held at the peek
			rerr    error
		)
		err := rc.Write(func(fd uintptr) bool {
			c.copies.RLock()
			defer c.copies.RUnlock()
			batch.bufs, batch.size = batch.bufs[:0], 0
			_, terr := c.ep.Read(batch, tcpip.ReadOptions{Peek: true})
			if batch.size == 0 {
				switch terr.(type) {
				case *tcpip.ErrWouldBlock:
					waitFor = true
				case *tcpip.ErrClosedForReceive:
					rerr = io.EOF
				case nil:
					waitFor = true // nothing but empty segments
				default:
					rerr = tcpipError("read", terr)
				}
				return true
			}
			iovs = iovs[:0]
			for _, b := range batch.bufs {
				iov := unix.Iovec{Base: &b[0]}
				iov.SetLen(len(b))
				iovs = append(iovs, iov)
			}
			for {
				r, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iovs[0])), uintptr(len(iovs)))
				switch errno {
				case 0:
					wrote = int(r)
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false // the runtime waits until dst is writable
				default:
					rerr = errno
					return true
				}
				break
			}
			// Take what the kernel took: the stack frees it and may
			// open its window.
			c.ep.Read(&consumer{left: wrote}, tcpip.ReadOptions{})
			drained = wrote == batch.size && !batch.full()
			return true
		})
		if wrote > 0 {
			total += int64(wrote)
			c.tune(wrote)
		}
		switch {
		case err != nil:
			return total, err
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		case waitFor, drained:
			// After a drain, wait's readiness check stands in for
			// another peek, which would find nothing as often as not
			// (a request, a reply).
			c.wait(waiter.ReadableEvents)
		}
	}
}

// ReadFromTCP copies what src receives into the conn until src's end of
// stream, as io.Copy(c, src) would.
//
// A round starts with one read(2) of up to headBytes: for a request or a
// reply that one call returns all of it, and the next returns EAGAIN, so
// a message costs two system calls. A read that fills the head asks the
// socket how much more it holds (SIOCINQ) and the stack takes that
// straight from the socket into its own buffers, behind the head; while a
// stream keeps the socket that full, rounds ask first and skip the head.
func (c *tcpConn) ReadFromTCP(src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		total int64
		head  [headBytes]byte
		held  []byte // read from src, not yet taken by the stack
		bulk  bool   // the last round found more than a head queued
	)
	for {
		var (
			n    int64
			eof  bool
			full bool // the stack's send buffer is
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			p := hostPayload{fd: int(fd), head: held}
			if len(held) == 0 && bulk {
				avail, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // SIOCINQ
				if err != nil {
					rerr = err
					return true
				}
				if bulk = avail >= headBytes; bulk {
					p.left = avail
				}
			}
			if len(held) == 0 && !bulk {
				m, err := unix.Read(int(fd), head[:])
				switch {
				case err == syscall.EAGAIN:
					return false // the runtime waits until src is readable
				case err == syscall.EINTR:
					return true
				case err != nil:
					rerr = err
					return true
				case m == 0:
					eof = true
					return true
				}
				p.head = head[:m]
				if m == len(head) {
					avail, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // SIOCINQ
					if err != nil {
						rerr = err
						return true
					}
					p.left = avail
					bulk = avail >= headBytes
				}
			}
			w, terr := c.ep.Write(&p, tcpip.WriteOptions{})
			n = w
			held = p.head // what the stack left of the head; the socket keeps the rest
			switch terr.(type) {
			case nil:
			case *tcpip.ErrWouldBlock:
				full = true
			default:
				if p.err != nil {
					rerr = p.err
				} else {
					rerr = tcpipError("write", terr)
				}
			}
			return true
		})
		total += n
		switch {
		case err != nil:
			return total, err
		case rerr != nil:
			return total, rerr
		case eof:
			return total, nil
		case full:
			c.wait(waiter.WritableEvents)
		}
	}
}

// headBytes is the first read of each round of ReadFromTCP: larger than
// most requests and replies, small enough to copy.
const headBytes = 4096

// hostPayload is a tcpip.Payloader of head, then left more bytes read from
// a non-blocking socket that holds at least that many. gVisor reads a
// payload of Len bytes into its own buffers, or fewer when its send buffer
// is short; what it leaves of head stays in head, what it leaves of the
// socket stays there. A socket that delivers fewer than left is an error,
// which ends the copy.
type hostPayload struct {
	fd   int
	head []byte
	left int
	err  error
}

func (p *hostPayload) Len() int { return len(p.head) + p.left }

func (p *hostPayload) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	if p.left == 0 {
		return 0, io.EOF
	}
	b = b[:min(len(b), p.left)]
	got := 0
	for got < len(b) {
		n, err := unix.Read(p.fd, b[got:])
		if err == syscall.EINTR {
			continue
		}
		if err == nil && n == 0 || err == syscall.EAGAIN {
			err = errShortSocket
		}
		if err != nil {
			p.err = err
			return got, err
		}
		got += n
	}
	p.left -= got
	return got, nil
}

// wait blocks until the endpoint has one of events, has hung up or has an
// error pending; Close wakes it (gVisor notifies all events).
func (c *tcpConn) wait(events waiter.EventMask) {
	waitEndpoint(c.ep, c.wq, events|waiter.EventHUp|waiter.EventErr, nil)
}
