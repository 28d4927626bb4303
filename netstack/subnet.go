package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// Rootless subnet routing: a member that routes a LAN but runs without
// root cannot forward packets in the kernel. Instead the stack accepts TCP
// and UDP flows addressed to the member's subnets and re-originates each
// one from an ordinary host socket (a userspace NAT); replies travel back
// through the same flow and so through the mesh.

// HostDialer opens host sockets; *net.Dialer implements it.
type HostDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

const (
	// subnetDialTimeout bounds connecting to a LAN host.
	subnetDialTimeout = 10 * time.Second
	// udpFlowIdle ends a UDP flow after this long without traffic.
	udpFlowIdle = 60 * time.Second
	// tcpForwarderWindow and tcpMaxInFlight size gVisor's forwarder: the
	// receive window of new flows and how many handshakes may be pending.
	// A pending handshake holds one of its member's flows while the host
	// dials, so the flow caps bind before this one does.
	tcpForwarderWindow = 0 // gVisor's default
	tcpMaxInFlight     = maxFlowsTotal
)

// SubnetRouter forwards flows from the mesh into local subnets.
type SubnetRouter struct {
	s       *Stack
	subnets atomic.Pointer[[]netip.Prefix]
	exit    atomic.Pointer[exitPolicy] // nil: not an exit (exit.go)
	dial    HostDialer
	log     *slog.Logger

	// tcp and udp count the flows (a TCP flow from its SYN on) per
	// protocol, per member and in all; members names a flow's member.
	tcp, udp *flowLimiter
	members  atomic.Pointer[members]
	refusals *refusalLog

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// RouteSubnets makes the stack accept flows to subnets and connect them
// to the host network through dial. Flows to any other address that is
// not the stack's own are refused (TCP reset) or dropped (UDP).
func (s *Stack) RouteSubnets(subnets []netip.Prefix, dial HostDialer, log *slog.Logger) (*SubnetRouter, error) {
	if !s.routing {
		return nil, errors.New("netstack: subnet routing needs a stack created with Options.SubnetRouting")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &SubnetRouter{s: s, dial: dial, log: log,
		tcp:      newFlowLimiter(maxFlowsPerMember, maxFlowsTotal),
		udp:      newFlowLimiter(maxFlowsPerMember, maxFlowsTotal),
		refusals: newRefusalLog(log, refusalLogInterval, maxFlowsPerMember, maxFlowsTotal),
	}
	r.SetSubnets(subnets)
	r.ctx, r.cancel = context.WithCancel(s.ctx)
	// Promiscuous: accept packets whose destination is not a local
	// address. Spoofing: answer from those addresses.
	if err := s.stack.SetPromiscuousMode(nicID, true); err != nil {
		return nil, tcpipError("enable promiscuous mode", err)
	}
	if err := s.stack.SetSpoofing(nicID, true); err != nil {
		return nil, tcpipError("enable spoofing", err)
	}
	tcpFwd := tcp.NewForwarder(s.stack, tcpForwarderWindow, tcpMaxInFlight, r.handleTCP)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s.stack, r.handleUDP)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	return r, nil
}

// SetSubnets replaces the routed subnets (after a book reload).
func (r *SubnetRouter) SetSubnets(subnets []netip.Prefix) {
	cp := append([]netip.Prefix(nil), subnets...)
	r.subnets.Store(&cp)
}

// SetMembers tells the router which member each source address belongs
// to: the prefixes of each member by name (its book entry's allowed IPs).
// Flows are capped per member; before SetMembers, per source address.
func (r *SubnetRouter) SetMembers(byName map[string][]netip.Prefix) {
	m := &members{}
	for name, ps := range byName {
		m.names = append(m.names, name)
		m.prefixes = append(m.prefixes, append([]netip.Prefix(nil), ps...))
	}
	r.members.Store(m)
}

// Close ends every forwarded flow and waits for them.
func (r *SubnetRouter) Close() {
	r.cancel()
	r.wg.Wait()
	r.refusals.close()
}

// admit takes a flow of proto from src in lim, or logs the refusal.
func (r *SubnetRouter) admit(lim *flowLimiter, proto string, src netip.Addr) (member string, ok bool) {
	member = r.members.Load().of(src)
	ok, why := lim.acquire(member)
	if !ok {
		r.refusals.refused(proto, member, why)
	}
	return member, ok
}

// routes reports whether the router forwards a flow from src to dst:
// into one of its subnets, or, as an exit, outside the mesh for a member.
func (r *SubnetRouter) routes(src, dst netip.Addr) bool {
	for _, p := range *r.subnets.Load() {
		if p.Contains(dst) {
			return true
		}
	}
	ex := r.exit.Load()
	if ex == nil {
		return false
	}
	if !r.members.Load().has(src) {
		r.log.Debug("exit flow refused", "src", src, "dst", dst, "why", "the source is no member of the book")
		return false
	}
	if why := ex.refusal(dst); why != "" {
		r.log.Debug("exit flow refused", "src", src, "dst", dst, "why", why)
		return false
	}
	return true
}

func endpointAddr(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

func (r *SubnetRouter) handleTCP(req *tcp.ForwarderRequest) {
	id := req.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	src := endpointAddr(id.RemoteAddress, id.RemotePort)
	if !r.routes(src.Addr(), dst.Addr()) || r.ctx.Err() != nil {
		req.Complete(true)
		return
	}
	member, ok := r.admit(r.tcp, "tcp", src.Addr())
	if !ok {
		req.Complete(true)
		return
	}
	held := true // until the relay goroutine takes the flow over
	defer func() {
		if held {
			r.tcp.release(member)
		}
	}()
	ctx, cancel := context.WithTimeout(r.ctx, subnetDialTimeout)
	host, err := r.dial.DialContext(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		r.log.Debug("subnet flow refused", "proto", "tcp", "src", src, "dst", dst, "err", err)
		req.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		req.Complete(true)
		return
	}
	req.Complete(false)
	mesh := &meshConn{Conn: r.s.newTCPConn(&wq, ep), ep: ep, wq: &wq}
	r.log.Debug("subnet flow", "proto", "tcp", "src", src, "dst", dst)
	held = false
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.tcp.release(member)
		relay(r.ctx, mesh, hostConn(host))
	}()
}

func (r *SubnetRouter) handleUDP(req *udp.ForwarderRequest) {
	id := req.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	src := endpointAddr(id.RemoteAddress, id.RemotePort)
	if !r.routes(src.Addr(), dst.Addr()) || r.ctx.Err() != nil {
		return
	}
	member, ok := r.admit(r.udp, "udp", src.Addr())
	if !ok {
		return
	}
	// This runs on the stack's packet path: the host socket is created
	// without blocking (UDP "dial" only binds).
	host, err := r.dial.DialContext(r.ctx, "udp", dst.String())
	if err != nil {
		r.udp.release(member)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		r.udp.release(member)
		return
	}
	mesh := &meshConn{Conn: gonet.NewUDPConn(&wq, ep), ep: ep, wq: &wq}
	r.log.Debug("subnet flow", "proto", "udp", "src", src, "dst", dst)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.udp.release(member)
		relayDatagrams(r.ctx, mesh, hostConn(host), udpFlowIdle)
	}()
}

// streamBufs lend a TCP flow a copy buffer only while data moves; the size
// is the relays' (see netutil.CopyBufferSize).
var streamBufs = sync.Pool{New: func() any { b := make([]byte, netutil.CopyBufferSize); return &b }}

// relay joins a TCP flow's two halves until both directions end or ctx
// is cancelled, passing half-closes on.
func relay(ctx context.Context, mesh, host readWaiter) {
	stop := context.AfterFunc(ctx, func() { mesh.Close(); host.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { pipeStream(host, mesh) })
	pipeStream(mesh, host)
	wg.Wait()
	mesh.Close()
	host.Close()
}

// closeWriter is implemented by *net.TCPConn and gonet.TCPConn.
type closeWriter interface{ CloseWrite() error }

// pipeStream copies src to dst until EOF, then half-closes dst; on an
// error it closes both. It waits for src without a buffer, except right
// after a read that filled the buffer, when more is likely pending.
func pipeStream(dst, src readWaiter) {
	more := false
	for {
		if !more {
			if err := src.waitRead(time.Time{}); err != nil {
				break
			}
		}
		bp := streamBufs.Get().(*[]byte)
		n, err := src.Read(*bp)
		more = n == len(*bp)
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				err = werr
			}
		}
		streamBufs.Put(bp)
		if err == io.EOF {
			if cw, ok := dst.unwrap().(closeWriter); ok && cw.CloseWrite() == nil {
				return
			}
			break
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// maxDatagram is the largest UDP payload; LAN hosts may send datagrams
// larger than the mesh MTU (the stack fragments them), e.g. DNS answers
// over EDNS.
const maxDatagram = 65535

// datagramBufs lend a flow a buffer only while one datagram is copied.
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// relayDatagrams copies datagrams both ways until idle passes without any.
func relayDatagrams(ctx context.Context, mesh, host readWaiter, idle time.Duration) {
	stop := context.AfterFunc(ctx, func() { mesh.Close(); host.Close() })
	defer stop()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	half := func(dst net.Conn, src readWaiter) {
		defer wg.Done()
		defer func() { mesh.Close(); host.Close() }()
		for {
			err := src.waitRead(time.Now().Add(idle))
			if err == nil {
				bp := datagramBufs.Get().(*[]byte)
				var n int
				n, err = src.Read(*bp)
				if err == nil {
					last.Store(time.Now().UnixNano())
					_, err = dst.Write((*bp)[:n])
					datagramBufs.Put(bp)
					if err != nil {
						return
					}
					continue
				}
				datagramBufs.Put(bp)
			}
			// A deadline on one side while the other is busy is not
			// idleness: keep going until both sides are quiet.
			if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			return
		}
	}
	wg.Add(2)
	go half(mesh, host)
	go half(host, mesh)
	wg.Wait()
}

type tcpipErr struct {
	op  string
	err tcpip.Error
}

func (e *tcpipErr) Error() string { return "netstack: " + e.op + ": " + e.err.String() }

func tcpipError(op string, err tcpip.Error) error { return &tcpipErr{op, err} }
