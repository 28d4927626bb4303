package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// Applied is the system state that Apply changed; Undo reverts it.
//
// macOS has no netlink; its documented interface for this is ifconfig(8)
// and route(8), run with fixed argument lists built from typed values.
type Applied struct {
	mu     sync.Mutex
	ifname string
	routes map[netip.Prefix]bool
	// With Setup.ExitMark: the /1 routes through the interface, and the
	// host routes of the underlay endpoints through the default gateways
	// there were before them (gw4, gw6: route(8) arguments, nil when that
	// family had no default route).
	exitRoutes []netip.Prefix
	gw4, gw6   []string
	hosts      map[netip.Addr]bool
}

// Apply configures the interface as s says. Forwarding and masquerading
// (subnets, an exit member) are Linux-only for now. With s.ExitMark the
// node sends everything through the interface as wg-quick does on macOS:
// 0.0.0.0/1 and 128.0.0.0/1 (and ::/1, 8000::/1 with an IPv6 address)
// through it, more specific than the default route, which stays, and a
// host route through the previous default gateway for every underlay
// endpoint. Untested: written to route(8)'s manual, never run here.
func Apply(s Setup) (*Applied, error) {
	if s.Exit {
		return nil, errors.New("hostnet: an exit member (forwarding) in TUN mode is only supported on Linux; run it in netstack mode")
	}
	if len(s.Subnets) > 0 || len(s.Masquerade) > 0 {
		return nil, errors.New("hostnet: routing a LAN (forwarding, --masquerade) is only supported on Linux")
	}
	a := &Applied{ifname: s.Interface, routes: map[netip.Prefix]bool{}}
	if s.MTU > 0 {
		if err := run("ifconfig", s.Interface, "mtu", strconv.Itoa(s.MTU)); err != nil {
			return nil, err
		}
	}
	for _, p := range s.Addresses {
		var err error
		if p.Addr().Is4() {
			// utun is point-to-point: give the address as both ends, then
			// route the mesh network to the interface.
			err = run("ifconfig", s.Interface, "inet", p.Addr().String(), p.Addr().String(), "alias")
			if err == nil {
				err = run("route", "-q", "-n", "add", "-inet", p.Masked().String(), "-interface", s.Interface)
			}
		} else {
			err = run("ifconfig", s.Interface, "inet6", p.String(), "alias")
		}
		if err != nil {
			a.Undo()
			return nil, err
		}
	}
	if err := run("ifconfig", s.Interface, "up"); err != nil {
		a.Undo()
		return nil, err
	}
	if err := a.SetRoutes(s.Routes); err != nil {
		a.Undo()
		return nil, err
	}
	if s.ExitMark != 0 {
		if err := a.addExit(s); err != nil {
			a.Undo()
			return nil, err
		}
	}
	return a, nil
}

// addExit installs the exit routes: the endpoints' host routes first, so
// the tunnel never loops into itself.
func (a *Applied) addExit(s Setup) error {
	a.gw4, a.gw6 = defaultGateway("-inet"), defaultGateway("-inet6")
	if a.gw4 == nil {
		return errors.New("hostnet: --exit-node: no IPv4 default route to reach the members' endpoints through; connect to a network first")
	}
	a.hosts = map[netip.Addr]bool{}
	if err := a.SetExitEndpoints(s.ExitEndpoints); err != nil {
		return err
	}
	exit := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
	for _, p := range s.Addresses {
		if p.Addr().Is6() {
			exit = append(exit, netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1"))
			break
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range exit {
		if err := run("route", "-q", "-n", "add", family(p), p.String(), "-interface", a.ifname); err != nil {
			return err
		}
		a.exitRoutes = append(a.exitRoutes, p)
	}
	return nil
}

// SetExitEndpoints makes the host routes of the underlay endpoints exactly
// those of addrs (with --exit-node; otherwise it does nothing). An
// endpoint of a family without a previous default route gets none.
func (a *Applied) SetExitEndpoints(addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hosts == nil {
		return nil
	}
	want := map[netip.Addr]bool{}
	for _, ip := range addrs {
		ip = ip.Unmap()
		if ip.IsValid() && !ip.IsLoopback() && !ip.IsUnspecified() && a.gateway(ip) != nil {
			want[ip] = true
		}
	}
	for ip := range a.hosts {
		if !want[ip] {
			if err := a.hostRoute("delete", ip); err != nil {
				return err
			}
			delete(a.hosts, ip)
		}
	}
	for ip := range want {
		if a.hosts[ip] {
			continue
		}
		if err := a.hostRoute("add", ip); err != nil {
			return err
		}
		a.hosts[ip] = true
	}
	return nil
}

func (a *Applied) gateway(ip netip.Addr) []string {
	if ip.Is4() {
		return a.gw4
	}
	return a.gw6
}

func (a *Applied) hostRoute(op string, ip netip.Addr) error {
	fam := "-inet"
	if ip.Is6() {
		fam = "-inet6"
	}
	return run("route", append([]string{"-q", "-n", op, fam, "-host", ip.String()}, a.gateway(ip)...)...)
}

// defaultGateway returns the route(8) arguments that reach family's
// default gateway ("192.0.2.1", or "-interface en0" for a link without
// one), nil when there is no default route.
func defaultGateway(family string) []string {
	out, err := exec.Command("route", "-n", "get", family, "default").Output()
	if err != nil {
		return nil
	}
	var gw, ifname string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch v = strings.TrimSpace(v); k {
		case "gateway":
			gw = v
		case "interface":
			ifname = v
		}
	}
	if ip, err := netip.ParseAddr(gw); err == nil {
		return []string{ip.String()}
	}
	if ifname != "" {
		return []string{"-interface", ifname}
	}
	return nil
}

// SetRoutes makes the routes through the interface exactly routes.
func (a *Applied) SetRoutes(routes []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	want := map[netip.Prefix]bool{}
	for _, p := range routes {
		want[p.Masked()] = true
	}
	for p := range a.routes {
		if !want[p] {
			if err := run("route", "-q", "-n", "delete", family(p), p.String(), "-interface", a.ifname); err != nil {
				return err
			}
			delete(a.routes, p)
		}
	}
	for p := range want {
		if a.routes[p] {
			continue
		}
		if err := run("route", "-q", "-n", "add", family(p), p.String(), "-interface", a.ifname); err != nil {
			return err
		}
		a.routes[p] = true
	}
	return nil
}

// SetSubnets fails for any subnet: routing a LAN is only supported on
// Linux.
func (a *Applied) SetSubnets(subnets []netip.Prefix) error {
	if len(subnets) > 0 {
		return errors.New("hostnet: routing a LAN (forwarding) is only supported on Linux")
	}
	return nil
}

// SetExit fails when exit is set: forwarding is only supported on Linux.
func (a *Applied) SetExit(exit bool, _ []netip.Prefix) error {
	if exit {
		return errors.New("hostnet: an exit member (forwarding) is only supported on Linux")
	}
	return nil
}

// Undo removes the routes Apply added. The utun interface disappears when
// its file descriptor is closed.
func (a *Applied) Undo() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, p := range a.exitRoutes {
		errs = append(errs, run("route", "-q", "-n", "delete", family(p), p.String(), "-interface", a.ifname))
	}
	a.exitRoutes = nil
	for ip := range a.hosts {
		errs = append(errs, a.hostRoute("delete", ip))
	}
	a.hosts = nil
	for p := range a.routes {
		errs = append(errs, run("route", "-q", "-n", "delete", family(p), p.String(), "-interface", a.ifname))
		delete(a.routes, p)
	}
	return errors.Join(errs...)
}

func family(p netip.Prefix) string {
	if p.Addr().Is6() {
		return "-inet6"
	}
	return "-inet"
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hostnet: %s %v: %v: %s", name, args, err, out)
	}
	return nil
}

// InterfaceExists reports whether a network interface called name exists.
func InterfaceExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
