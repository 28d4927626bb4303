package netstack

import (
	"context"
	"errors"
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
	// maxUDPFlows bounds concurrent UDP flows so a member cannot exhaust
	// the router's sockets.
	maxUDPFlows = 4096
	// tcpForwarderWindow and tcpMaxInFlight size gVisor's forwarder: the
	// receive window of new flows and how many handshakes may be pending.
	tcpForwarderWindow = 0 // gVisor's default
	tcpMaxInFlight     = 1024
)

// SubnetRouter forwards flows from the mesh into local subnets.
type SubnetRouter struct {
	s       *Stack
	subnets atomic.Pointer[[]netip.Prefix]
	dial    HostDialer
	log     *slog.Logger

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	udpFlows atomic.Int64
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
	r := &SubnetRouter{s: s, dial: dial, log: log}
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

// Close ends every forwarded flow and waits for them.
func (r *SubnetRouter) Close() {
	r.cancel()
	r.wg.Wait()
}

func (r *SubnetRouter) routes(a netip.Addr) bool {
	for _, p := range *r.subnets.Load() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func endpointAddr(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

func (r *SubnetRouter) handleTCP(req *tcp.ForwarderRequest) {
	id := req.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	src := endpointAddr(id.RemoteAddress, id.RemotePort)
	if !r.routes(dst.Addr()) || r.ctx.Err() != nil {
		req.Complete(true)
		return
	}
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
	mesh := gonet.NewTCPConn(&wq, ep)
	r.log.Debug("subnet flow", "proto", "tcp", "src", src, "dst", dst)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		relay(r.ctx, mesh, host)
	}()
}

func (r *SubnetRouter) handleUDP(req *udp.ForwarderRequest) {
	id := req.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	src := endpointAddr(id.RemoteAddress, id.RemotePort)
	if !r.routes(dst.Addr()) || r.ctx.Err() != nil {
		return
	}
	if r.udpFlows.Add(1) > maxUDPFlows {
		r.udpFlows.Add(-1)
		r.log.Debug("subnet flow dropped: too many UDP flows", "src", src, "dst", dst)
		return
	}
	// This runs on the stack's packet path: the host socket is created
	// without blocking (UDP "dial" only binds).
	host, err := r.dial.DialContext(r.ctx, "udp", dst.String())
	if err != nil {
		r.udpFlows.Add(-1)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		r.udpFlows.Add(-1)
		return
	}
	mesh := gonet.NewUDPConn(&wq, ep)
	r.log.Debug("subnet flow", "proto", "udp", "src", src, "dst", dst)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.udpFlows.Add(-1)
		relayDatagrams(r.ctx, mesh, host, udpFlowIdle)
	}()
}

// relay joins a TCP flow's two halves until both directions end or ctx
// is cancelled.
func relay(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	netutil.Join(a, b)
	a.Close()
	b.Close()
}

// relayDatagrams copies datagrams both ways until idle passes without any.
func relayDatagrams(ctx context.Context, mesh, host net.Conn, idle time.Duration) {
	stop := context.AfterFunc(ctx, func() { mesh.Close(); host.Close() })
	defer stop()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		defer func() { mesh.Close(); host.Close() }()
		buf := make([]byte, 64<<10)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				// A deadline on one side while the other is busy is not
				// idleness: keep going until both sides are quiet.
				if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
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
