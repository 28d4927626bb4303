package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/wgmesh/wgmesh/netstack"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Dial connects to addr inside the mesh. network is "tcp", "tcp4", "tcp6",
// "udp", "udp4" or "udp6"; addr is HOST:PORT where HOST is a member name
// ("beta", "beta.mesh") or an address. Names are resolved against the peer
// book only, never against the host's DNS. In netstack mode an address
// outside the mesh is refused, unless Config.ExitNode names a member that
// is an exit member of the book in force: then it goes through that
// member.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	st, book, err := n.running()
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	dst, err := resolveMeshAddr(book, network, addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if st == nil { // TUN mode: the kernel routes mesh addresses
		if err := tunTarget(book, n.self, dst.Addr()); err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, dst.String())
	}
	if err := n.exitRefusal(book, dst.Addr()); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		return st.DialTCP(ctx, dst)
	case "udp", "udp4", "udp6":
		return st.DialUDP(dst)
	}
	return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
}

// tunTarget refuses, in TUN mode, a destination that the host's kernel
// delivers to the host itself instead of sending into the mesh: loopback,
// the unspecified address and the addresses of the host's interfaces,
// except this node's own mesh addresses (which the mesh reaches too). A
// member routing 127.0.0.0/8 publishes its own loopback; dialing that
// through the kernel would instead reach the loopback-only services of the
// host that runs the dialer (a proxy's host, say).
func tunTarget(book *peerbook.Book, self peerbook.Key, a netip.Addr) error {
	a = a.Unmap().WithZone("") // an IPv4-mapped address reaches the same host
	local := a.IsLoopback() || a.IsUnspecified()
	if !local {
		if p, ok := book.PeerByKey(self); ok && slices.Contains(p.Addresses, a) {
			return nil
		}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("%s: cannot list this host's addresses to tell whether it is one of them: %w", a, err)
		}
		for _, ia := range addrs {
			if ipn, ok := ia.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
					local = true
					break
				}
			}
		}
	}
	if local {
		return fmt.Errorf("%s is not allowed: it is an address of this host, which in TUN mode the kernel delivers to the host itself, not into the mesh", a)
	}
	return nil
}

// Listen listens for TCP connections from the mesh. addr is ":PORT" (all of
// this node's mesh addresses) or "ADDR:PORT" with one of them. In netstack
// mode ":PORT" binds each mesh address, not a wildcard, so a member that
// routes subnets does not answer flows meant for its LAN hosts.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	st, ap, err := n.listenArgs(network, addr, "tcp")
	if err != nil {
		return nil, err
	}
	if st == nil {
		return net.Listen(network, n.hostListenAddr(ap, network == "tcp6").String())
	}
	return st.ListenTCP(ap)
}

// ListenPacket opens a UDP socket in the mesh. addr is ":PORT" (this node's
// first mesh address, IPv4 first) or "ADDR:PORT".
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	st, ap, err := n.listenArgs(network, addr, "udp")
	if err != nil {
		return nil, err
	}
	if st == nil {
		return net.ListenPacket(network, n.hostListenAddr(ap, network == "udp6").String())
	}
	return st.ListenUDP(ap)
}

// listenArgs checks that the node runs and that network is proto, proto4
// or proto6, and parses addr. A nil stack means TUN mode: the host's
// sockets serve the mesh addresses.
func (n *Node) listenArgs(network, addr, proto string) (*netstack.Stack, netip.AddrPort, error) {
	st, _, err := n.running()
	if err != nil {
		return nil, netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if network != proto && network != proto+"4" && network != proto+"6" {
		return nil, netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	ap, err := parseListenAddr(addr)
	if err != nil {
		return nil, netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return st, ap, nil
}

func parseListenAddr(addr string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid port %q", portStr)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(port)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address must be an IP address, got %q", host)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// ResolveMember returns the mesh address for host: an IP literal as is, or
// the address of the member it names, preferring IPv4 unless the network
// asks for IPv6.
func (n *Node) ResolveMember(network, host string) (netip.Addr, error) {
	return lookupMember(n.Book(), network, host)
}

func resolveMeshAddr(book *peerbook.Book, network, addr string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid port %q", portStr)
	}
	ip, err := lookupMember(book, network, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func lookupMember(book *peerbook.Book, network, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	p, ok := book.PeerByName(host)
	if !ok {
		return netip.Addr{}, fmt.Errorf("no member named %q in the peer book", host)
	}
	want6 := network == "tcp6" || network == "udp6"
	want4 := network == "tcp4" || network == "udp4"
	for _, a := range p.Addresses {
		if (want6 && a.Is6()) || (!want6 && a.Is4()) {
			return a, nil
		}
	}
	if !want4 && !want6 && len(p.Addresses) > 0 {
		return p.Addresses[0], nil
	}
	return netip.Addr{}, fmt.Errorf("member %q has no address for %s", host, network)
}
