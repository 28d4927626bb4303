package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Applied is the system state that Apply changed; Undo reverts it.
type Applied struct {
	mu        sync.Mutex
	ifname    string
	link      netlink.Link
	routes    map[netip.Prefix]bool
	sysctls   map[string]string // path -> value to restore
	nftTables []*nftables.Table
}

// Apply configures the interface as s says.
func Apply(s Setup) (*Applied, error) {
	link, err := netlink.LinkByName(s.Interface)
	if err != nil {
		return nil, fmt.Errorf("hostnet: interface %s: %w", s.Interface, err)
	}
	a := &Applied{ifname: s.Interface, link: link, routes: map[netip.Prefix]bool{}, sysctls: map[string]string{}}
	if err := a.apply(s); err != nil {
		a.Undo()
		return nil, err
	}
	return a, nil
}

func (a *Applied) apply(s Setup) error {
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
	if s.Forwarding {
		if err := a.enableForwarding(s.Addresses); err != nil {
			return err
		}
	}
	if len(s.Masquerade) > 0 {
		if err := a.masquerade(s.Masquerade); err != nil {
			return err
		}
	}
	return nil
}

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

func (a *Applied) enableForwarding(addrs []netip.Prefix) error {
	paths := []string{"/proc/sys/net/ipv4/ip_forward"}
	for _, p := range addrs {
		if p.Addr().Is6() {
			paths = append(paths, "/proc/sys/net/ipv6/conf/all/forwarding")
			break
		}
	}
	for _, path := range paths {
		old, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("hostnet: enable forwarding: %w", err)
		}
		if strings.TrimSpace(string(old)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("hostnet: enable forwarding (%s): %w", path, err)
		}
		a.mu.Lock()
		a.sysctls[path] = string(old)
		a.mu.Unlock()
	}
	return nil
}

// masquerade installs an nftables table of our own (so removal cannot
// touch anyone else's rules) that source-NATs traffic from the mesh
// networks leaving through any interface but the mesh one.
func (a *Applied) masquerade(nets []netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("hostnet: masquerade: %w", err)
	}
	name := "wgmesh_" + a.ifname
	for _, family := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		var rules [][]expr.Any
		for _, n := range nets {
			if (family == nftables.TableFamilyIPv6) != n.Addr().Is6() {
				continue
			}
			rules = append(rules, masqueradeRule(n, a.ifname))
		}
		if len(rules) == 0 {
			continue
		}
		t := c.AddTable(&nftables.Table{Family: family, Name: name})
		ch := c.AddChain(&nftables.Chain{
			Name:     "postrouting",
			Table:    t,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource,
		})
		for _, r := range rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
		a.nftTables = append(a.nftTables, t)
	}
	if err := c.Flush(); err != nil {
		a.nftTables = nil
		return fmt.Errorf("hostnet: install masquerade rules (nftables): %w", err)
	}
	return nil
}

// masqueradeRule is `ip saddr NET oifname != IFNAME masquerade`.
func masqueradeRule(n netip.Prefix, ifname string) []expr.Any {
	offset, size := uint32(12), uint32(4) // IPv4 source address
	if n.Addr().Is6() {
		offset, size = 8, 16
	}
	mask := net.CIDRMask(n.Bits(), int(size)*8)
	oif := make([]byte, unix.IFNAMSIZ)
	copy(oif, ifname)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.Masked().Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: oif},
		&expr.Masq{},
	}
}

// Undo removes the routes and rules Apply added and restores the sysctls
// it changed. The interface itself and its addresses go away when the TUN
// device is closed.
func (a *Applied) Undo() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for p := range a.routes {
		if err := netlink.RouteDel(a.route(p)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", p, err))
		}
		delete(a.routes, p)
	}
	if len(a.nftTables) > 0 {
		if c, err := nftables.New(); err == nil {
			for _, t := range a.nftTables {
				c.DelTable(t)
			}
			if err := c.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("remove masquerade rules: %w", err))
			}
		}
		a.nftTables = nil
	}
	for path, old := range a.sysctls {
		if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
			errs = append(errs, err)
		}
		delete(a.sysctls, path)
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
