// Package hostnet configures the operating system's side of a TUN-mode
// mesh interface: addresses, MTU, link state, routes to members' subnets,
// IP forwarding and masquerading. Everything it changes is recorded so Undo
// can remove it again on exit.
package hostnet

import (
	"errors"
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
	// Forwarding turns on IPv4/IPv6 forwarding (this node routes a LAN).
	Forwarding bool
	// Masquerade lists mesh networks whose traffic leaving through another
	// interface is source-NATed to that interface's address, for LANs whose
	// router has no route back to the mesh.
	Masquerade []netip.Prefix
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
