//go:build unix

package netstack

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// hostConn wraps a host socket so that a flow can wait for it to become
// readable without a buffer.
func hostConn(c net.Conn) readWaiter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return &plainConn{c}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return &plainConn{c}
	}
	return &rawHostConn{Conn: c, rc: rc}
}

type rawHostConn struct {
	net.Conn
	rc syscall.RawConn
}

// waitRead peeks at one byte without consuming it: EAGAIN means nothing is
// pending and the runtime's poller waits; anything else (a datagram, data,
// end of stream, an error) is for the Read that follows to report.
func (h *rawHostConn) waitRead(deadline time.Time) error {
	if err := h.SetReadDeadline(deadline); err != nil {
		return err
	}
	return h.rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN)
	})
}

func (h *rawHostConn) unwrap() net.Conn { return h.Conn }
