package netstack

import (
	"net"
	"os"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// A subnet-router flow spends most of its life waiting for the next
// packet. Its halves wait for readability without a buffer and take one
// from a pool only to copy what arrived, so an idle flow holds no copy
// buffer (a UDP flow held 2 x 64 KiB before, a TCP flow 2 x 256 KiB).

// readWaiter is a conn that can wait until a Read would not block.
type readWaiter interface {
	net.Conn
	// waitRead returns nil once a Read would not block (data, end of
	// stream or an error is pending), or a timeout error at deadline (zero:
	// none). It holds no buffer.
	waitRead(deadline time.Time) error
	// unwrap returns the conn itself.
	unwrap() net.Conn
}

// meshConn is the mesh half of a flow: a gonet conn on an endpoint whose
// waiter queue the router created.
type meshConn struct {
	net.Conn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

func (m *meshConn) waitRead(deadline time.Time) error {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	if !waitEndpoint(m.ep, m.wq, waiter.ReadableEvents|waiter.EventHUp, expired) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// waitEndpoint blocks until ep has one of events (true) or expired fires
// (false; nil: never).
func waitEndpoint(ep tcpip.Endpoint, wq *waiter.Queue, events waiter.EventMask, expired <-chan time.Time) bool {
	if ep.Readiness(events) != 0 {
		return true
	}
	e, ch := waiter.NewChannelEntry(events)
	wq.EventRegister(&e)
	defer wq.EventUnregister(&e)
	// Ready between the check and the registration: no event comes.
	if ep.Readiness(events) != 0 {
		return true
	}
	select {
	case <-ch:
		return true
	case <-expired:
		return false
	}
}

// plainConn is a host conn without access to its socket: waitRead only
// sets the deadline, and the Read that follows waits (holding a buffer).
type plainConn struct{ net.Conn }

func (p *plainConn) waitRead(deadline time.Time) error { return p.SetReadDeadline(deadline) }

func (p *plainConn) unwrap() net.Conn { return p.Conn }

func (m *meshConn) unwrap() net.Conn { return m.Conn }
