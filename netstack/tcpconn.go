package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Buffer maxima per connection. gVisor sizes a connection's receive
// buffer from what the application read in the last round trip (and its
// send buffer from the congestion window), up to one stack-wide maximum.
// No single maximum suits both kinds of path a mesh has: members on one
// LAN or in one cloud region (sub-millisecond to a few ms) and members
// across the Internet (tens of ms). On a short path the receive buffer
// climbs to any maximum in slow start and the data then waits in queues
// (bench/README.md, "What still halves the window"): 2 MiB moved more per
// CPU second than 4 MiB between two stacks on one host. On a 50 ms path a
// stream is bounded by its buffer: 12.5 MB/s with 2 MiB, 30 with 4 MiB,
// 61 with 8 MiB (and 41 with 8 MiB to receive but gVisor's default 4 MiB
// to send). So the stack-wide maxima are bufferCeiling and each
// connection keeps its receive buffer's own maximum from its round trip.
const (
	bufferFloor   = 2 << 20
	bufferCeiling = 8 << 20
	// bufferPerSecond is the maximum per second of round trip: enough for
	// one stream at 1 Gbit/s, three times the bytes in flight, since
	// gVisor advertises about a third of a buffer's memory as window.
	bufferPerSecond = 3 * 125_000_000
)

// pathBuffers turns the per-connection maxima on; benchmarks turn it off
// to compare with gVisor's stack-wide maximum alone.
var pathBuffers = true

// pathBufferMax is the buffer maximum for a path of round-trip time rtt;
// zero (not measured yet) counts as a short path.
func pathBufferMax(rtt time.Duration) int64 {
	m := int64(rtt.Seconds() * bufferPerSecond)
	return min(max(m, bufferFloor), bufferCeiling)
}

// tcpConn is a gonet.TCPConn that sizes its own receive buffer: gVisor's
// rule with the path's maximum. Taking back a size gVisor grew past it does
// not work: gVisor may already have advertised the larger window, the
// sender fills it, and with more in the buffer than its size the window
// updates that should reopen it do not go out (bench/netstack_pair.sh saw
// streams stall at ~10 Mbit/s). So the conn turns gVisor's tuning off (a
// size set with notification, like SO_RCVBUF) and only ever grows the
// buffer, with gVisor's notified path sending the window update. The send
// buffer needs no limit of its own: gVisor sizes it at twice the congestion
// window, whose data in flight the receiver's window bounds.
type tcpConn struct {
	*gonet.TCPConn
	ep  tcpip.Endpoint
	wq  *waiter.Queue
	ops *tcpip.SocketOptions
	// copies is the stack's: held while a copy to a host socket uses the
	// endpoint's buffers in place (hostcopy_linux.go), so that Close does
	// not free them meanwhile.
	copies *sync.RWMutex

	mu sync.Mutex
	// gVisor's receive tuning (ModerateRecvBuf) state: bytes read since
	// measureAt, and in the interval before.
	measureAt        time.Time
	copied, previous int
	lastRTT          time.Duration // the interval's length
}

// A segment's payload as the rule counts it (gVisor uses the connection's
// MSS, which the endpoint does not expose; the terms it sizes are small),
// and the initial window gVisor advertises: twice 10 segments.
const (
	segmentBytes  = 1400
	initialWindow = 2 * 10 * segmentBytes
)

func (s *Stack) newTCPConn(wq *waiter.Queue, ep tcpip.Endpoint) net.Conn {
	c := &tcpConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq, ops: ep.SocketOptions(), copies: &s.copies}
	if !pathBuffers {
		return c.TCPConn
	}
	size := c.ops.GetReceiveBufferSize()
	c.ops.SetReceiveBufferSize(size, true) // turns gVisor's tuning off
	c.previous = initialWindow             // as gVisor bootstraps it
	c.measureAt = time.Now()
	return c
}

// Close implements net.Conn; it waits for a copy that is using the
// endpoint's buffers to let go of them.
func (c *tcpConn) Close() error {
	c.copies.Lock()
	defer c.copies.Unlock()
	return c.TCPConn.Close()
}

// Read implements net.Conn.
func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if n > 0 {
		c.tune(n)
	}
	return n, err
}

// tune is gVisor's ModerateRecvBuf with a maximum for the path: once per
// round trip the buffer becomes twice what the application read in it,
// plus twice that again scaled by the growth over the round trip before
// (the sender's slow start), and it never shrinks. The round trip is at
// least 1 ms: an accepted connection on a short path has none measured,
// where gVisor would not tune at all until its receiver measured one.
func (c *tcpConn) tune(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.copied += n
	now := time.Now()
	if now.Sub(c.measureAt) < max(c.lastRTT, time.Millisecond) {
		return
	}
	// Read once per interval: it takes the endpoint's lock.
	rtt := c.rtt()
	copied := c.copied
	c.measureAt, c.copied, c.lastRTT = now, 0, rtt
	if copied <= c.previous {
		return
	}
	want := 2*copied + 16*segmentBytes
	want += 2 * (want * (copied - c.previous) / max(c.previous, 1))
	want = max(want, 2*initialWindow)
	c.previous = copied
	if m := int(pathBufferMax(rtt)); want > m {
		want = m
	}
	if int64(want) > c.ops.GetReceiveBufferSize() {
		c.ops.SetReceiveBufferSize(int64(want), true)
	}
}

// rtt is the connection's smoothed round-trip time, zero until measured.
// A connection that only receives keeps its handshake's, which counts
// WireGuard's handshake too when the SYN was a peer's first packet (a
// larger buffer than the path needs, not a smaller one); gVisor times an
// accepted handshake from timestamps only, in whole milliseconds, so on a
// sub-millisecond path that end has none.
func (c *tcpConn) rtt() time.Duration {
	var info tcpip.TCPInfoOption
	if c.ep.GetSockOpt(&info) != nil {
		return 0
	}
	return info.RTT
}

// DialTCP opens a TCP connection to dst through the stack. It connects the
// way gonet.DialContextTCP does, keeping the endpoint for the conn's
// buffer tuning.
func (s *Stack) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	entry, connected := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if err := ctx.Err(); err != nil {
		ep.Close()
		return nil, err
	}
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-connected:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opError("connect", dst, terr)
	}
	return s.newTCPConn(&wq, ep), nil
}

// listenTCP listens on one address the way gonet.ListenTCP does; its
// conns are tcpConns.
func (s *Stack) listenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(addr)
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, opError("bind", addr, terr)
	}
	// As gonet and Go's net package on Linux (somaxconn).
	if terr := ep.Listen(4096); terr != nil {
		ep.Close()
		return nil, opError("listen", addr, terr)
	}
	return &tcpListener{s: s, ep: ep, wq: &wq, addr: addr, closed: make(chan struct{})}, nil
}

// opError is a TCP operation's error as Go's net package gives it.
func opError(op string, addr netip.AddrPort, terr tcpip.Error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: errors.New(terr.String())}
}

// tcpListener is a listening endpoint whose Accept returns tcpConns.
type tcpListener struct {
	s         *Stack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	addr      netip.AddrPort // as asked for: port 0 until bound
	closed    chan struct{}
	closeOnce sync.Once
}

// Accept implements net.Listener; after Close it returns net.ErrClosed.
func (l *tcpListener) Accept() (net.Conn, error) {
	const events = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr
	entry, ready := waiter.NewChannelEntry(events)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		ep, wq, terr := l.ep.Accept(nil)
		if terr == nil {
			return l.s.newTCPConn(wq, ep), nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			select {
			case <-l.closed:
			default:
				return nil, opError("accept", l.addr, terr)
			}
		}
		select {
		case <-ready:
		case <-l.closed:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// Close implements net.Listener.
func (l *tcpListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.ep.Close()
	})
	return nil
}

// Addr implements net.Listener.
func (l *tcpListener) Addr() net.Addr {
	a, err := l.ep.GetLocalAddress()
	if err != nil {
		return net.TCPAddrFromAddrPort(l.addr)
	}
	ip, _ := netip.AddrFromSlice(a.Addr.AsSlice())
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, a.Port))
}
