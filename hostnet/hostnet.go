// Package hostnet configures the operating system's side of a TUN-mode
// mesh interface: addresses, MTU, link state, routes to members' subnets,
// a packet filter, IP forwarding and masquerading. Everything it changes is
// recorded so Undo can remove it again on exit, and what a killed process
// could not undo is found and repaired by the next Apply.
package hostnet

import (
	"errors"
	"hash/fnv"
	"log/slog"
	"net/netip"
)

// Setup describes what the mesh interface needs from the system.
type Setup struct {
	// Interface is the name of an existing TUN interface.
	Interface string
	// Addresses are this node's mesh addresses with the prefix length of
	// their mesh network, so the whole mesh network is on-link.
	Addresses []netip.Prefix
	// MTU of the interface.
	MTU int
	// Routes are other members' subnets, routed through the interface.
	Routes []netip.Prefix
	// Subnets are this node's own subnets, the LANs it routes for the
	// mesh. With any, IPv4 (and, with an IPv6 address, IPv6) forwarding is
	// turned on, and traffic from the mesh is forwarded to these prefixes
	// only: the node is a gateway to its LANs, not to every network its
	// host reaches.
	Subnets []netip.Prefix
	// Masquerade lists mesh networks whose traffic into Subnets is
	// source-NATed to the address of the interface it leaves by, for LANs
	// whose router has no route back to the mesh.
	Masquerade []netip.Prefix
	// ExitMark, when not zero, sends all traffic that is not for the mesh
	// or a more specific route through the interface, as wg-quick does for
	// AllowedIPs = 0.0.0.0/0: default routes in routing table ExitMark, a
	// rule that looks that table up for packets without firewall mark
	// ExitMark, and a rule that looks up the main table without its
	// default routes first. The WireGuard sockets must carry ExitMark
	// (UAPI fwmark), so the underlay endpoints stay reachable. Undo
	// removes the routes and rules. See ExitMarkFor.
	ExitMark uint32
	// Exit makes this node an exit member: traffic from the mesh to any
	// destination outside the interface is forwarded and masqueraded to
	// the address of the interface it leaves by (forwarding is turned
	// on). Sources are the mesh's members only: WireGuard accepts from a
	// member only the addresses the book gives it.
	Exit bool
	// ExitNetworks are the mesh networks masqueraded when Exit is set.
	ExitNetworks []netip.Prefix
	// ExitEndpoints are the members' underlay endpoint addresses. With
	// ExitMark on macOS, which has no firewall marks, each gets a host
	// route through the previous default gateway, so WireGuard's own
	// packets do not loop into the interface (see SetExitEndpoints).
	// Linux ignores them: the mark keeps the endpoints reachable.
	ExitEndpoints []netip.Addr
	// StateDir keeps the values of the sysctls Apply changes until Undo
	// restores them, so a process that was killed cannot make its host
	// forget them: the next Apply restores them. Empty: kept in memory only.
	StateDir string
	// Logger receives notes about state a previous run left behind.
	// Default: discard.
	Logger *slog.Logger
}

// ExitMarkFor is the firewall mark, and the routing table, that
// Setup.ExitMark should use for the interface called ifname: derived from
// the name, so a restarted run finds what a killed one left, distinct
// between instances (their interfaces have distinct names), and outside
// the small numbers people and wg-quick (51820) pick.
func ExitMarkFor(ifname string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(ifname))
	return 0x776d0000 | h.Sum32()&0xffff
}

// ErrUnsupported is returned on systems without a TUN-mode implementation.
var ErrUnsupported = errors.New("hostnet: TUN mode is not supported on this system; use --mode netstack")

// RouteConflictError reports a route that already exists through another
// interface.
type RouteConflictError struct {
	Prefix netip.Prefix
	Via    string
}

func (e *RouteConflictError) Error() string {
	return "route " + e.Prefix.String() + " already exists via " + e.Via +
		"; remove it, or drop that subnet from the peer book, before starting wgmesh"
}
