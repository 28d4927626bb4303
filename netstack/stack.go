// Package netstack runs a node's mesh interface in userspace: a gVisor
// TCP/IP stack whose link endpoint is handed to wireguard-go as its
// tun.Device. No root, no /dev/net/tun, no kernel module.
//
// All gVisor imports stay inside this package, so the peer book and the TUN
// path never pull gVisor in.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID tcpip.NICID = 1

// Stack is a userspace TCP/IP stack that is also a tun.Device: wireguard-go
// reads the packets the stack sends and writes the packets it decrypts.
type Stack struct {
	ep     *linkEndpoint
	stack  *stack.Stack
	events chan tun.Event
	mtu    int
	addrs  []netip.Addr
	// routing: created with Options.SubnetRouting.
	routing bool

	// ctx is cancelled by Close to wake a Read blocked on the queue.
	ctx    context.Context
	cancel context.CancelFunc

	// copies keeps endpoints from being closed while a copy to a host
	// socket uses their buffers in place (hostcopy_linux.go).
	copies sync.RWMutex

	closeOnce sync.Once
}

var _ tun.Device = (*Stack)(nil)

// Options tune a Stack.
type Options struct {
	// SubnetRouting prepares the stack to forward flows into subnets (see
	// RouteSubnets). It must be chosen at creation: a routing stack
	// accepts packets for any destination, so it cannot also short-cut
	// traffic to its own addresses (gVisor's HandleLocal).
	//
	// Every stack lets in loopback addresses from the mesh, so a member may
	// publish its host's loopback services by listing a 127.0.0.0/8
	// subnet. That is safe: wireguard-go only delivers a source address
	// that the sending member's book entry claims, and a loopback
	// destination is only accepted by a routing stack whose subnets hold it.
	SubnetRouting bool
}

// New creates a stack holding the given local addresses with the given MTU.
func New(addrs []netip.Addr, mtu int, opts Options) (*Stack, error) {
	if mtu <= 0 {
		return nil, fmt.Errorf("netstack: invalid mtu %d", mtu)
	}
	s := &Stack{
		ep: newLinkEndpoint(mtu),
		stack: stack.New(stack.Options{
			NetworkProtocols: []stack.NetworkProtocolFactory{
				ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
				ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
			},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
			HandleLocal:        !opts.SubnetRouting,
		}),
		events:  make(chan tun.Event, 1),
		mtu:     mtu,
		addrs:   append([]netip.Addr(nil), addrs...),
		routing: opts.SubnetRouting,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.configure(); err != nil {
		s.Close()
		return nil, err
	}
	s.events <- tun.EventUp
	return s, nil
}

func (s *Stack) configure() error {
	if err := tcpDefaults.apply(s.stack); err != nil {
		return err
	}
	if err := s.stack.CreateNIC(nicID, s.ep); err != nil {
		return fmt.Errorf("netstack: create NIC: %s", err)
	}
	var has4, has6 bool
	for _, a := range s.addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			has6 = true
		} else {
			has4 = true
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %s: %s", a, err)
		}
	}
	// Everything not local goes to wireguard-go, which routes by allowed IPs
	// and drops what no member claims.
	if has4 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if has6 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	return nil
}

// tcpSettings are the TCP options every stack gets.
type tcpSettings struct {
	sack           bool
	rack           bool
	cc             string // "reno" or "cubic"
	moderateRcvBuf bool
	// Buffer ranges (min, default, max bytes); zero keeps gVisor's
	// 4 KiB, 1 MiB, 4 MiB.
	sndBuf, rcvBuf [3]int
}

// tcpDefaults are chosen by measurement with BenchmarkTCPSettings (one
// stream through two stacks joined by wireguard-go on loopback UDP; 2 vCPU;
// MB/s, median and range):
//
//	go test ./netstack -run XXX -bench TCPSettings -count 6
//	WGMESH_BENCH_DELAY=10ms WGMESH_BENCH_LOSS=0.001 \
//	  go test ./netstack -run XXX -bench TCPSettings -benchtime 4s -count 5
//
//	variant                     loopback (of 6)      10 ms each way, 0.1% loss each way (of 5)
//	reno, RACK, moderate rcvbuf  346 (303..391)       2.43 (1.95..3.01)
//	cubic                        268 (241..282)       2.59 (2.34..3.51)
//	reno without RACK            290 (252..352)       3.13 (2.06..3.47)
//	reno, fixed rcvbuf           193 (181..217)       2.55 (2.44..3.08)
//	reno, 8 MiB buffers          338 (294..406)       2.47 (2.10..6.43)
//	cubic, 8 MiB buffers         258 (246..320)       2.37 (1.87..3.79)
//
// That table measured only the end that dialed sending. With the end that
// accepted sending (what a --expose serves, and one stream B->A in
// bench/netstack_pair.sh), the sender halves its window for losses that
// never happened: no packet was lost or reordered on the way (the receiving
// stack saw every segment in order), yet the sender entered SACK recovery
// 13-16 times in 2 s, one retransmission each, half of them later counted
// spurious, and its congestion window stayed near 270 segments. The
// pattern is RACK's tail loss probe: gVisor arms it at 2 x SRTT with no
// floor (Linux keeps at least two jiffies), so on a sub-millisecond path a
// scheduling hiccup in the ACK stream fires it, and an ACK that covers the
// probe before the D-SACK arrives counts as a loss (each retransmitted
// packet was the first MSS of the highest super-segment sent, which is
// what the probe sends; loss recovery would resend from the first
// unacknowledged byte). On Internet paths the timeout is tens of
// milliseconds. Both sending directions, measured
// alternately (-count 1, four runs each):
//
//	variant              dialer sends         acceptor sends       lossy, dialer / acceptor
//	reno with RACK       375 (321..431)       354 (308..388)       3.23 / 2.54
//	reno without RACK    376 (331..418)       404 (360..482)       2.87 / 2.46
//
// (bench/netstack_pair.sh in one run: 0.95/0.84/0.92 with RACK, 1.05/1.01/
// 0.97 without, x upstream for one stream A->B, B->A and four B->A). But
// RACK brings tail loss probes, and without them a lost last segment waits
// for the retransmission timeout. Requests of 100 bytes answered with
// 32 KiB over 5 ms each way and 1 % loss (BenchmarkTCPRequests, 400
// requests, seven runs; ms, median):
//
//	variant              mean per request     p99
//	reno with RACK       56.7                 278 (270..291)
//	reno without RACK    70.3                 446 (280..477)
//
// Interactive traffic over a lossy Internet path matters more than 14 % of
// bulk throughput in one direction on a clean one, so RACK stays on. On
// the lossy bulk path every variant sits near the Mathis bound (MSS/RTT *
// 1.22/sqrt(p), about 2.7 MB/s) with overlapping ranges. Reno beats cubic,
// and a fixed receive buffer costs 45 %. Larger buffers buy nothing, so
// gVisor's 4 KiB/1 MiB/4 MiB stay. (tc netem is not available on this
// kernel; the lossy path is emulated in the test, see lossy_test.go.)
//
// Since then the endpoint gives the sender the D-SACK that shows such a
// probe to be spurious (tailprobe.go), which takes most of the acceptor's
// gap away with RACK still on: acceptor sends, -count 4, reno 502
// (493..529) against 424 (409..427) with the correction off
// (reno-noprobefix), and 1-2 against 3-5 recoveries per run.
//
// Since then each connection sizes its own receive buffer, with a maximum
// from its round trip (tcpconn.go), and the stack-wide maxima are
// bufferCeiling: over 50 ms the old 4 MiB bounded one stream to ~30 MB/s.
var tcpDefaults = tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true,
	sndBuf: [3]int{4 << 10, 1 << 20, bufferCeiling}, rcvBuf: [3]int{4 << 10, 1 << 20, bufferCeiling}}

func (t tcpSettings) apply(st *stack.Stack) error {
	set := func(what string, opt tcpip.SettableTransportProtocolOption) error {
		if err := st.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: set TCP %s: %s", what, err)
		}
		return nil
	}
	// gVisor leaves SACK off by default; without it one lost segment
	// stalls a window's worth of data on a lossy path.
	sack := tcpip.TCPSACKEnabled(t.sack)
	if err := set("SACK", &sack); err != nil {
		return err
	}
	var rec tcpip.TCPRecovery
	if t.rack {
		rec = tcpip.TCPRACKLossDetection
	}
	if err := set("recovery", &rec); err != nil {
		return err
	}
	cc := tcpip.CongestionControlOption(t.cc)
	if err := set("congestion control", &cc); err != nil {
		return err
	}
	mod := tcpip.TCPModerateReceiveBufferOption(t.moderateRcvBuf)
	if err := set("moderate receive buffer", &mod); err != nil {
		return err
	}
	if t.sndBuf[2] > 0 {
		o := tcpip.TCPSendBufferSizeRangeOption{Min: t.sndBuf[0], Default: t.sndBuf[1], Max: t.sndBuf[2]}
		if err := set("send buffer", &o); err != nil {
			return err
		}
	}
	if t.rcvBuf[2] > 0 {
		o := tcpip.TCPReceiveBufferSizeRangeOption{Min: t.rcvBuf[0], Default: t.rcvBuf[1], Max: t.rcvBuf[2]}
		if err := set("receive buffer", &o); err != nil {
			return err
		}
	}
	return nil
}

// Addrs returns the stack's local addresses.
func (s *Stack) Addrs() []netip.Addr { return append([]netip.Addr(nil), s.addrs...) }

// Name implements tun.Device.
func (s *Stack) Name() (string, error) { return "netstack", nil }

// File implements tun.Device; a userspace stack has no file.
func (s *Stack) File() *os.File { return nil }

// Events implements tun.Device.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// MTU implements tun.Device.
func (s *Stack) MTU() (int, error) { return s.mtu, nil }

// BatchSize implements tun.Device.
func (s *Stack) BatchSize() int { return linkBatchSize }

// Read implements tun.Device: it blocks for the first outbound packet, then
// drains whatever else is ready into the rest of the batch, cutting TCP
// super-segments into MTU-sized packets.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return s.ep.read(bufs, sizes, offset)
}

// Write implements tun.Device: it injects a batch of decrypted packets into
// the stack, coalescing consecutive TCP segments of a flow.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	if s.ctx.Err() != nil {
		return 0, os.ErrClosed
	}
	return s.ep.write(bufs, offset)
}

// Close implements tun.Device. It is safe to call more than once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		// Closing the stack frees every endpoint's buffers.
		s.copies.Lock()
		s.stack.RemoveNIC(nicID)
		s.stack.Close()
		s.copies.Unlock()
		s.ep.Close()
		close(s.events)
	})
	return nil
}

// ErrNoAddress is returned when dialing a family the stack has no address in.
var ErrNoAddress = errors.New("netstack: no local address of that IP family")

// TCPStats are counters of the stack's TCP connections, for status and
// metrics: how often senders repaired loss, which on a clean path should
// be seldom.
type TCPStats struct {
	// Retransmits counts segments sent again.
	Retransmits uint64 `json:"retransmits"`
	// Recoveries counts entries into loss recovery (fast or SACK
	// recovery), each of which cuts a connection's congestion window.
	Recoveries uint64 `json:"recoveries"`
	// Timeouts counts retransmission timeouts.
	Timeouts uint64 `json:"timeouts"`
	// SpuriousProbes counts tail loss probes the endpoint showed to have
	// duplicated data that had arrived (tailprobe.go): windows kept.
	SpuriousProbes uint64 `json:"spurious_probes"`
}

// TCPStats returns the stack's TCP counters since it started.
func (s *Stack) TCPStats() TCPStats {
	st := s.stack.Stats().TCP
	return TCPStats{
		Retransmits:    st.Retransmits.Value(),
		Recoveries:     st.FastRecovery.Value() + st.SACKRecovery.Value(),
		Timeouts:       st.Timeouts.Value(),
		SpuriousProbes: s.ep.tail.fixed.Load(),
	}
}
