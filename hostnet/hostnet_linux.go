package hostnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Applied is the system state that Apply changed; Undo reverts it.
type Applied struct {
	mu        sync.Mutex
	ifname    string
	link      netlink.Link
	routes    map[netip.Prefix]bool
	filter    filter
	nft       bool              // the filter's table is installed
	sysctls   map[string]string // sysctl key -> original value to restore
	stateFile string            // where sysctls is kept; "" for memory only
	stateOK   bool              // stateFile was read (or absent): ours to replace
	ipv6      bool              // the node has an IPv6 mesh address
	exit      exitRoutes        // ExitMark's routes and rules
}

// Apply configures the interface as s says. It first repairs what a
// previous run for the same interface left when it was killed: its
// nftables table is replaced and the sysctl values it recorded are the
// ones to restore.
func Apply(s Setup) (*Applied, error) {
	link, err := netlink.LinkByName(s.Interface)
	if err != nil {
		return nil, fmt.Errorf("hostnet: interface %s: %w", s.Interface, err)
	}
	a := &Applied{ifname: s.Interface, link: link, routes: map[netip.Prefix]bool{}, sysctls: map[string]string{}}
	if s.StateDir != "" {
		a.stateFile = filepath.Join(s.StateDir, StateFile(s.Interface))
	}
	if err := a.apply(s); err != nil {
		a.Undo()
		return nil, err
	}
	return a, nil
}

func (a *Applied) apply(s Setup) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := a.loadState(); err != nil {
		return err
	}
	if len(a.sysctls) > 0 {
		log.Warn("a previous wgmesh run for this interface was killed before it restored sysctl values; restoring them on exit", "interface", a.ifname, "file", a.stateFile, "values", fmt.Sprint(a.sysctls))
	}
	// The filter comes first: no moment with mesh addresses reachable
	// from the underlay, or forwarding on without it.
	a.filter = filter{ifname: a.ifname, subnets: s.Subnets, masquerade: s.Masquerade, exit: s.Exit, exitNetworks: s.ExitNetworks}
	for _, p := range s.Addresses {
		a.filter.addresses = append(a.filter.addresses, p.Addr())
		a.ipv6 = a.ipv6 || p.Addr().Is6()
	}
	stale, err := a.filter.install()
	if err != nil {
		return err
	}
	a.nft = true
	if len(stale) > 0 {
		log.Warn("replaced the nftables table a previous wgmesh run left behind", "interface", a.ifname, "tables", strings.Join(stale, ", "))
	}
	if s.MTU > 0 {
		if err := netlink.LinkSetMTU(a.link, s.MTU); err != nil {
			return fmt.Errorf("hostnet: set MTU %d on %s: %w", s.MTU, a.ifname, err)
		}
	}
	for _, p := range s.Addresses {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// Duplicate address detection would hold the address
			// "tentative" for a second or two; a mesh address is unique
			// by construction (the book's validator checks it).
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(a.link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("hostnet: add address %s to %s: %w", p, a.ifname, err)
		}
	}
	if err := netlink.LinkSetUp(a.link); err != nil {
		return fmt.Errorf("hostnet: bring %s up: %w", a.ifname, err)
	}
	if err := a.SetRoutes(s.Routes); err != nil {
		return err
	}
	if s.ExitMark != 0 {
		if err := a.exit.add(a.link.Attrs().Index, s.ExitMark, a.ipv6); err != nil {
			return err
		}
	}
	var keys []string
	if len(s.Subnets) > 0 || s.Exit {
		keys = forwardingKeys(a.ipv6)
	}
	if s.ExitMark != 0 {
		keys = append(keys, "net.ipv4.conf.all.src_valid_mark")
	}
	if len(keys) > 0 {
		return a.enableForwarding(keys)
	}
	// Nothing to forward: what a killed run left goes back now.
	if err := a.restoreSysctls(); err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	return nil
}

// SetSubnets makes this node forward from the mesh to subnets only (and
// masquerade towards them), as after a reload that changed its own
// subnets. The filter is replaced in one transaction.
func (a *Applied) SetSubnets(subnets []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.filter
	f.dropForward = f.forwards()
	f.subnets = subnets
	if _, err := f.install(); err != nil {
		return err
	}
	a.filter = f
	if len(subnets) > 0 || f.exit {
		return a.enableForwarding(forwardingKeys(a.ipv6))
	}
	return nil
}

// SetExit makes this node an exit member (forward from the mesh to any
// other interface, masquerading networks there) or stops it, as after a
// reload that changed its exit = true. The filter is replaced in one
// transaction; forwarding sysctls stay as they are when it stops (the
// filter no longer lets anything through for the exit).
func (a *Applied) SetExit(exit bool, networks []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.filter
	f.dropForward = f.forwards()
	f.exit, f.exitNetworks = exit, networks
	if _, err := f.install(); err != nil {
		return err
	}
	a.filter = f
	if exit {
		return a.enableForwarding(forwardingKeys(a.ipv6))
	}
	return nil
}

// SetExitEndpoints does nothing on Linux: the WireGuard sockets' firewall
// mark keeps the underlay endpoints out of the exit routes.
func (a *Applied) SetExitEndpoints([]netip.Addr) error { return nil }

// SetRoutes makes the routes through the interface exactly routes: it adds
// the missing ones and removes those it added before that are no longer
// wanted. A route to the same prefix through another interface is a
// conflict, reported as *RouteConflictError.
func (a *Applied) SetRoutes(routes []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	want := map[netip.Prefix]bool{}
	for _, p := range routes {
		want[p.Masked()] = true
	}
	for p := range a.routes {
		if !want[p] {
			if err := netlink.RouteDel(a.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("hostnet: remove route %s: %w", p, err)
			}
			delete(a.routes, p)
		}
	}
	for _, p := range routes {
		p = p.Masked()
		if a.routes[p] {
			continue
		}
		if via, ok := existingRoute(p, a.link.Attrs().Index); ok {
			return &RouteConflictError{Prefix: p, Via: via}
		}
		if err := netlink.RouteAdd(a.route(p)); err != nil {
			return fmt.Errorf("hostnet: add route %s via %s: %w", p, a.ifname, err)
		}
		a.routes[p] = true
	}
	return nil
}

func (a *Applied) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: a.link.Attrs().Index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
}

// existingRoute finds a route of the main table, through an interface
// other than ours, that overlaps p: the same prefix, a wider one that covers
// it or a narrower one inside it. Each would take part of p's traffic from
// the mesh, or lose its own to it. The default route is the exception: a
// subnet is meant to be more specific than it.
func existingRoute(p netip.Prefix, ours int) (string, bool) {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	rs, err := netlink.RouteListFiltered(family, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", false
	}
	for _, r := range rs {
		if r.LinkIndex == ours || r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		bits, _ := r.Dst.Mask.Size()
		if !ok || bits == 0 {
			continue
		}
		q := netip.PrefixFrom(a.Unmap(), bits).Masked()
		if !q.Overlaps(p) {
			continue
		}
		via := fmt.Sprintf("interface #%d", r.LinkIndex)
		if r.LinkIndex == 0 {
			via = "a route without an interface (a blackhole, say)"
		} else if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			via = l.Attrs().Name
		}
		if q != p {
			via += " (the host's route " + q.String() + " overlaps it)"
		}
		return via, true
	}
	return "", false
}

// Undo removes the routes and the nftables table Apply added and restores
// the sysctls it changed. The interface itself and its addresses go away
// when the TUN device is closed.
func (a *Applied) Undo() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	if err := a.exit.remove(); err != nil {
		errs = append(errs, err)
	}
	for p := range a.routes {
		if err := netlink.RouteDel(a.route(p)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", p, err))
		}
		delete(a.routes, p)
	}
	if a.nft {
		if err := removeTable(a.ifname); err != nil {
			errs = append(errs, fmt.Errorf("remove nftables table %s: %w", tableName(a.ifname), err))
		}
		a.nft = false
	}
	if err := a.restoreSysctls(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hostnet: undo: %w", err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// InterfaceExists reports whether a network interface called name exists.
func InterfaceExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}
