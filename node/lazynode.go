package node

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/peerbook"
)

// The node's side of lazy peers (lazy.go): the wrappers around the data
// path, the two device functions, the exemptions and the tick's call.

// lazyWrap creates n.lazy and wraps the node's data-plane device and bind;
// lazyAttach gives it the device once created. Runs on the loop.
func (n *Node) lazyWrap(tdev tun.Device, bind conn.Bind) (tun.Device, conn.Bind) {
	l := newLazyPeers(n.log, n.lazyQuietAfter, n.lazyUnansweredAfter)
	l.dev = newLazyDevice(tdev, l.wake)
	lb := newLazyBind(bind, n.cfg.PrivateKey, l.anyIdle, l.wake)
	n.lazy, n.lazyBind = l, lb
	return l.dev, lb
}

// lazyAttach gives the lazy state its two device functions.
func (n *Node) lazyAttach(dev *device.Device) {
	n.lazy.configure = func(pc *peerConfig) error {
		var w uapiWriter
		w.writePeer(pc, false)
		if err := dev.IpcSet(w.String()); err != nil {
			return fmt.Errorf("node: configure member %s: %w", pc.name, errors.Unwrap(err))
		}
		return nil
	}
	n.lazy.remove = func(keys []peerbook.Key) error {
		var w uapiWriter
		for _, k := range keys {
			w.peer(k)
			w.updateOnly()
			w.remove()
		}
		if err := dev.IpcSet(w.String()); err != nil {
			return fmt.Errorf("node: remove idle members: %w", errors.Unwrap(err))
		}
		return nil
	}
}

// lazyClose stops wakes before the device closes. Runs on the loop.
func (n *Node) lazyClose() {
	if n.lazy != nil {
		n.lazy.close()
	}
	if n.lazyBind != nil {
		n.lazyBind.closeRate()
	}
	n.lazy, n.lazyBind = nil, nil
}

// lazyTickLocked lets idle members go from the tick's device snapshot.
// Runs on the loop.
func (n *Node) lazyTickLocked(dev *deviceState, now time.Time) {
	if n.lazy == nil {
		return
	}
	idled := n.lazy.observe(dev, now, n.applied, n.lazyExemptLocked())
	if len(idled) == 0 {
		return
	}
	n.log.Debug("members idle", "count", len(idled))
	if len(idled) >= releaseAfterIdle && n.releasing.CompareAndSwap(false, true) {
		ctx := n.upCtx
		n.loops.Add(1)
		go func() {
			defer n.loops.Done()
			defer n.releasing.Store(false)
			releaseMemory(ctx)
		}()
	}
}

// releaseAfterIdle is how many members going idle at once make the node
// hand the memory of their device peers back to the system.
const releaseAfterIdle = 256

// releaseMemory returns the memory of removed device peers to the system.
// A wireguard-go peer's queues are freed by finalizers, which run after
// one collection and free only at the next; left to itself the runtime
// keeps the pages (~25 KB per peer, 250 MB at 10,000) for minutes. Two
// forced collections, a moment apart, free them at once; they run only
// after a large batch went idle, not per member.
func releaseMemory(ctx context.Context) {
	debug.FreeOSMemory()
	select {
	case <-ctx.Done():
		return
	case <-time.After(200 * time.Millisecond): // the finalizers run
	}
	debug.FreeOSMemory()
}

// lazyExemptLocked returns the members that must stay configured, or nil
// when none may go idle. Runs on the loop.
func (n *Node) lazyExemptLocked() func(peerbook.Key) bool {
	if n.selfUnreachable() {
		// No member can initiate to this node: only its own handshakes
		// and keepalives keep a path.
		return nil
	}
	discovering := len(n.registryTargets()) > 0
	relaying := make(map[peerbook.Key]bool, len(n.relayVia))
	for _, via := range n.relayVia {
		relaying[via] = true
	}
	return func(k peerbook.Key) bool {
		e := n.entries[k]
		if e == nil || e.Relay || e.Registry {
			return true
		}
		if discovering && e.Endpoint.IsZero() {
			return true // registry lookups and hole punching need it
		}
		if _, ok := n.relayVia[k]; ok {
			return true
		}
		return relaying[k]
	}
}

// lazyLock brackets one of the node's own device writes (see
// lazyPeers.lock). It returns the unlock function.
func (n *Node) lazyLock() func() {
	if n.lazy == nil {
		return func() {}
	}
	n.lazy.lock()
	return n.lazy.unlock
}
