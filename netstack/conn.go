package netstack

import (
	"context"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if !ap.Addr().IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return fa, proto
}

// DialTCP opens a TCP connection to dst through the stack.
func (s *Stack) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialContextTCP(ctx, s.stack, fa, proto)
}

// DialUDP opens a connected UDP socket to dst through the stack.
func (s *Stack) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialUDP(s.stack, nil, &fa, proto)
}

// ListenTCP listens on addr. An unspecified address listens on every local
// address of the stack, in both IP families.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	if addr.Addr().IsValid() && !addr.Addr().IsUnspecified() {
		fa, proto := fullAddr(addr)
		return gonet.ListenTCP(s.stack, fa, proto)
	}
	// A gVisor IPv6 endpoint on "::" is dual-stack by default (not
	// V6ONLY), so one listener serves both families; binding 0.0.0.0 as
	// well would collide with it.
	wild := s.wildcards(addr.Port())
	if len(wild) == 0 {
		return nil, ErrNoAddress
	}
	fa, proto := fullAddr(wild[len(wild)-1])
	return gonet.ListenTCP(s.stack, fa, proto)
}

// ListenUDP binds a UDP socket on addr. An unspecified address binds the
// stack's first address of each family only when the stack has exactly one
// family; otherwise give an address.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		wild := s.wildcards(addr.Port())
		if len(wild) == 0 {
			return nil, ErrNoAddress
		}
		// gVisor UDP endpoints are single-family; take the first family
		// and let callers ask for the other one by address.
		addr = wild[0]
	}
	fa, proto := fullAddr(addr)
	return gonet.DialUDP(s.stack, &fa, nil, proto)
}

// wildcards returns one unspecified address per IP family the stack has.
func (s *Stack) wildcards(port uint16) []netip.AddrPort {
	var has4, has6 bool
	for _, a := range s.addrs {
		if a.Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	var out []netip.AddrPort
	if has4 {
		out = append(out, netip.AddrPortFrom(netip.IPv4Unspecified(), port))
	}
	if has6 {
		out = append(out, netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	}
	return out
}
