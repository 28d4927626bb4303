package hostnet

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// exitRoutes are the default routes and rules of Setup.ExitMark.
type exitRoutes struct {
	routes []*netlink.Route
	rules  []*netlink.Rule
}

// exitPriority is the priority of the "lookup main suppress_prefixlength
// 0" rule for mark; "not fwmark mark lookup mark" comes right after it.
// Both are before the main table's rule (32766) and distinct per
// interface, so rules a killed run left are recognized as ours.
func exitPriority(mark uint32) int { return 28000 + 2*int(mark&0xffff%1000) }

// add installs, for each family in use, a default route through the
// interface in table mark, "lookup main suppress_prefixlength 0" and then
// "not fwmark mark lookup mark", as wg-quick does. Rules a killed run
// left for the same table or at the same priorities are removed first.
func (e *exitRoutes) add(ifindex int, mark uint32, ipv6 bool) error {
	families := []int{netlink.FAMILY_V4}
	if ipv6 {
		families = append(families, netlink.FAMILY_V6)
	}
	for _, fam := range families {
		old, err := netlink.RuleList(fam)
		if err != nil {
			return fmt.Errorf("hostnet: list routing rules: %w", err)
		}
		prio := exitPriority(mark)
		for i := range old {
			if old[i].Table == int(mark) || (old[i].Table == unix.RT_TABLE_MAIN && old[i].SuppressPrefixlen == 0 && old[i].Priority == prio) {
				netlink.RuleDel(&old[i])
			}
		}
		dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if fam == netlink.FAMILY_V6 {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		r := &netlink.Route{LinkIndex: ifindex, Dst: dst, Table: int(mark), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("hostnet: add the exit route %s to table %d: %w", dst, mark, err)
		}
		e.routes = append(e.routes, r)

		main := netlink.NewRule()
		main.Family, main.Table, main.SuppressPrefixlen, main.Priority = fam, unix.RT_TABLE_MAIN, 0, prio
		if err := netlink.RuleAdd(main); err != nil {
			return fmt.Errorf("hostnet: add the rule lookup main suppress_prefixlength 0: %w", err)
		}
		e.rules = append(e.rules, main)
		via := netlink.NewRule()
		via.Family, via.Table, via.Mark, via.Invert, via.Priority = fam, int(mark), mark, true, prio+1
		if err := netlink.RuleAdd(via); err != nil {
			return fmt.Errorf("hostnet: add the rule not fwmark %#x lookup %d: %w", mark, mark, err)
		}
		e.rules = append(e.rules, via)
	}
	return nil
}

// remove deletes what add installed.
func (e *exitRoutes) remove() error {
	var errs []error
	for _, r := range e.rules {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove routing rule: %w", err))
		}
	}
	for _, r := range e.routes {
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove exit route: %w", err))
		}
	}
	e.rules, e.routes = nil, nil
	return errors.Join(errs...)
}
