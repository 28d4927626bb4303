//go:build !linux && !darwin

package hostnet

import "net/netip"

// Applied is the system state that Apply changed.
type Applied struct{}

// Apply always fails here: this system has no TUN-mode support.
func Apply(Setup) (*Applied, error) { return nil, ErrUnsupported }

// SetRoutes always fails here.
func (a *Applied) SetRoutes([]netip.Prefix) error { return ErrUnsupported }

// SetSubnets always fails here.
func (a *Applied) SetSubnets([]netip.Prefix) error { return ErrUnsupported }

// SetExit always fails here.
func (a *Applied) SetExit(bool, []netip.Prefix) error { return ErrUnsupported }

// SetExitEndpoints always fails here.
func (a *Applied) SetExitEndpoints([]netip.Addr) error { return ErrUnsupported }

// Undo does nothing here.
func (a *Applied) Undo() error { return nil }

// InterfaceExists reports false here.
func InterfaceExists(string) bool { return false }
