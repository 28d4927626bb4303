package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
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
}

// Apply configures the interface as s says. Forwarding and masquerading
// are Linux-only for now.
func Apply(s Setup) (*Applied, error) {
	if s.ExitMark != 0 || s.Exit {
		return nil, errors.New("hostnet: exit members and --exit-node are not built for macOS yet")
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
	return a, nil
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
