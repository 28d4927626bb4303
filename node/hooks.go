package node

import (
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgmesh/wgmesh/netstack"
)

// testHooks let tests in this package run a node on a fake network and a
// fake clock, as wireguard-go's conn/bindtest runs devices without
// sockets: path, relay, discovery and DDNS timing then take milliseconds
// of fake time instead of seconds of real time. Unexported: nothing
// outside the package can set them. The zero value is the real thing.
type testHooks struct {
	// bind replaces the UDP sockets of the device.
	bind conn.Bind
	// clock replaces the node's time: the loop's schedule and every
	// time it compares (relay wait, lookup intervals, back-off).
	// wireguard-go keeps its own, real, time for handshakes.
	clock clock
	// hostDial replaces the host sockets of the netstack subnet and exit
	// router.
	hostDial netstack.HostDialer
}

// clock is the node's time source.
type clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) clockTimer
}

// clockTimer is a one-shot timer of a clock.
type clockTimer interface {
	C() <-chan time.Time
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) clockTimer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop()               { t.t.Stop() }

// clk returns the node's clock.
func (n *Node) clk() clock {
	if n.hooks.clock != nil {
		return n.hooks.clock
	}
	return realClock{}
}

// now is the node's current time.
func (n *Node) now() time.Time { return n.clk().Now() }
