package netstack

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Rootless exit member: a member with exit = true in netstack mode opens
// the flows members send to destinations outside the mesh from its own
// host sockets, as the subnet router does for its LANs. Destinations on
// the exit's own host are refused: a member must not reach the host's
// loopback-only services (or those bound to its other addresses) through
// it, which in TUN mode the kernel's forwarding rules out by itself.

// Exit says what an exit member forwards beyond its subnets.
type Exit struct {
	// Mesh lists what is not outside: the mesh networks, the members'
	// addresses and subnets. Flows to them are never sent to the host
	// network (they belong to the mesh, or to no one).
	Mesh []netip.Prefix
	// HostAddrs lists the addresses of this host's interfaces. Nil:
	// net.InterfaceAddrs, read at most once per hostAddrsTTL.
	HostAddrs func() ([]netip.Addr, error)
}

// hostAddrsTTL bounds how long a read of the host's addresses is reused:
// the UDP forwarder asks on the packet path, once per new flow.
const hostAddrsTTL = time.Second

// exitPolicy is an Exit in force.
type exitPolicy struct {
	mesh  []netip.Prefix
	addrs func() ([]netip.Addr, error)
}

// SetExit makes the router forward flows to destinations outside the
// mesh (ex), or stop doing so (nil): flows already open stay, new ones
// are refused. The stack must have been created with
// Options.SubnetRouting.
func (r *SubnetRouter) SetExit(ex *Exit) {
	if ex == nil {
		r.exit.Store(nil)
		return
	}
	p := &exitPolicy{mesh: slices.Clone(ex.Mesh), addrs: ex.HostAddrs}
	if p.addrs == nil {
		p.addrs = cachedInterfaceAddrs(hostAddrsTTL)
	}
	r.exit.Store(p)
}

// exitRefusal says why the exit refuses dst, "" when it forwards it.
func (p *exitPolicy) refusal(dst netip.Addr) string {
	a := dst.Unmap().WithZone("")
	switch {
	case a.IsLoopback(), a.IsUnspecified():
		return "an address of the exit member's host"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "link-local"
	case a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "multicast or broadcast"
	}
	for _, m := range p.mesh {
		if m.Contains(a) {
			return "inside the mesh"
		}
	}
	addrs, err := p.addrs()
	if err != nil {
		// Not knowing the host's addresses, fail closed.
		return "the exit member cannot list its host's addresses"
	}
	if slices.Contains(addrs, a) {
		return "an address of the exit member's host"
	}
	return ""
}

// cachedInterfaceAddrs returns a func listing the host's interface
// addresses, reusing one read for ttl.
func cachedInterfaceAddrs(ttl time.Duration) func() ([]netip.Addr, error) {
	var (
		mu    sync.Mutex
		at    time.Time
		addrs []netip.Addr
	)
	return func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < ttl {
			return addrs, nil
		}
		ias, err := net.InterfaceAddrs()
		if err != nil {
			return nil, err
		}
		// A new slice: callers may still read the last one.
		fresh := make([]netip.Addr, 0, len(ias))
		for _, ia := range ias {
			if ipn, ok := ia.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					fresh = append(fresh, ip.Unmap())
				}
			}
		}
		addrs, at = fresh, time.Now()
		return addrs, nil
	}
}
