package node

import (
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Paths. A member is reached directly when a handshake with it succeeded
// recently. When punching has visibly failed, traffic to it goes through a
// relay member instead: its prefixes move to the relay's peer entry, and
// the relay forwards in userspace (relayDevice). Punching has failed when
// the member's endpoint is known (from the book or a registry) and
// relayInitiations handshake initiations left for it without a byte coming
// back (seen at a tick), or at the latest relayAfter after its endpoint became known. The
// other side comes to the same conclusion on its own and picks the same
// relay, the first relay member in book order that it reaches and that is
// not down, so both directions agree. The direct entry keeps its endpoint
// and keepalive and starts a handshake every directProbeEvery, so the
// moment a direct handshake succeeds the member is routed directly again.
// A relay member never relays: its paths are direct or none.
//
// A relay in use is watched: when nothing has come from it for
// relayQuiet, the node starts a handshake with it (WireGuard answers every
// initiation, so a live relay always answers within a round trip); when
// nothing has come for relayDeadAfter despite that, the relay is down, and
// every member relayed through it moves to the next relay at once. A relay
// that is down is used again after its next handshake.

// relayAfter bounds how long a member with a known endpoint may stay
// without a handshake before it is relayed, whatever the counters say.
const relayAfter = 12 * time.Second

// relayInitiations is how many unanswered handshake initiations show that
// punching failed. WireGuard sends one on learning the endpoint (with a
// keepalive) and retries every 5 s, so two take about 5 s. Through cone
// NATs the handshake completes long before the second.
const relayInitiations = 2

// initiationSize is the size of a WireGuard handshake initiation on the
// wire, to count initiations in a member's transmit counter.
const initiationSize = 148

// relayQuiet and relayDeadAfter time the watch on relays in use and on
// members reached directly that this node sends to. WireGuard sends at
// most one initiation per 5 s, so a live member, probed from relayQuiet
// on, answers within about 5 s of the previous answer (plus a round trip
// and the 1 s tick); relayDeadAfter leaves a margin over that.
const (
	relayQuiet     = time.Second
	relayDeadAfter = 6*time.Second + 500*time.Millisecond
)

// pathTick is how often paths are re-evaluated.
const pathTick = time.Second

// directProbeEvery is how often a relayed member's direct entry starts a
// handshake. WireGuard itself stops trying after 90 s without an answer,
// and never tries where no keepalive is set and no traffic is routed to
// the entry (it is relayed), so without these probes a relayed member
// would stay relayed after the direct path works again.
const directProbeEvery = 20 * time.Second

// pathState is what the node knows about the path to one member.
type pathState struct {
	// endpointSince is when the device first had an endpoint for the
	// member; zero while it has none.
	endpointSince time.Time
	// changed is when the path last changed (direct, relayed, none).
	changed time.Time
	path    string
	// source says where the configured endpoint came from.
	source string
	// probed is when the direct entry of a relayed member last started
	// a handshake.
	probed time.Time
	// txAtEndpoint and rxAtEndpoint are the member's counters when its
	// endpoint became known; failedAt is when relayInitiations
	// initiations were first seen unanswered since.
	txAtEndpoint, rxAtEndpoint uint64
	failedAt                   time.Time
	// rx is the member's receive counter as last seen and rxAt when it
	// last grew; tx the transmit counter as last seen; watched is when the node last started a handshake to
	// check on the member as a relay in use.
	rx, tx  uint64
	rxAt    time.Time
	watched time.Time
	// downAt is when the member, a relay, was found down; zero while it
	// is not. brokenAt is when the member, reached directly, stopped
	// answering; zero once anything comes from it. txAtRx is the
	// transmit counter when rx last grew.
	downAt, brokenAt time.Time
	txAtRx           uint64
}

// Path descriptions in Status.
const (
	PathDirect = "direct"
	PathNone   = "no path"
	// PathRelayPrefix starts the path of a relayed member, followed by
	// the relay's name.
	PathRelayPrefix = "relayed via "
)

// routeRelays rewrites want's allowed IPs for the members currently
// relayed: their prefixes move to their relay's entry. Relays that are no
// longer usable under book are dropped. Runs on the loop.
func (n *Node) routeRelays(book *peerbook.Book, want map[peerbook.Key]*peerConfig) {
	for k, via := range n.relayVia {
		relayed, ok1 := want[k]
		relay, ok2 := want[via]
		entry, ok3 := book.PeerByKey(via)
		if !ok1 || !ok2 || !ok3 || !entry.Relay {
			delete(n.relayVia, k)
			continue
		}
		relayed.allowedIPs = nil
		relay.allowedIPs = append(slices.Clip(relay.allowedIPs), relayed.own...)
	}
}

// direct reports whether the device has a recent handshake with k.
func direct(dev *deviceState, k peerbook.Key, now time.Time) bool {
	d, ok := dev.peers[k]
	return ok && !d.lastHandshake.IsZero() && now.Sub(d.lastHandshake) < staleHandshake
}

// updatePathsLocked re-evaluates every member's path from dev, the tick's
// device snapshot. Runs on the loop.
func (n *Node) updatePathsLocked(dev *deviceState, now time.Time) {
	if n.dev == nil || n.book == nil {
		return
	}
	n.rotateEndpointsLocked(dev, now)
	changed := false
	inUse := map[peerbook.Key]bool{}
	for _, via := range n.relayVia {
		inUse[via] = true
	}
	for k := range n.applied {
		ps := n.paths[k]
		if ps == nil {
			ps = &pathState{changed: now, path: PathNone, rxAt: now}
			n.paths[k] = ps
		}
		d := dev.peers[k]
		if d != nil && d.endpoint.IsValid() {
			if ps.endpointSince.IsZero() {
				// From the previous read: the initiation that went out
				// with the endpoint counts.
				ps.endpointSince = now
				ps.txAtEndpoint, ps.rxAtEndpoint, ps.failedAt = ps.tx, ps.rx, time.Time{}
			}
		} else {
			ps.endpointSince = time.Time{}
		}
		if d != nil {
			ps.tx = d.tx
		}
		if d != nil && d.rx != ps.rx {
			ps.rx, ps.rxAt, ps.txAtRx = d.rx, now, d.tx
			if !ps.brokenAt.IsZero() {
				ps.brokenAt = time.Time{}
				n.log.Info("member answers again", "peer", n.applied[k].name)
			}
		}
		switch {
		case inUse[k]:
			if n.watchLocked(k, ps, d, now) {
				// Down as a relay, and not reached directly either.
				ps.downAt, ps.brokenAt = now, now
				n.log.Warn("relay does not answer; using the next relay", "relay", n.applied[k].name)
			}
		case ps.brokenAt.IsZero() && d != nil && d.tx > ps.txAtRx && direct(dev, k, now):
			// Sending to a member reached directly: is it still there?
			if n.watchLocked(k, ps, d, now) {
				n.pathBrokenLocked(k, ps, now)
			}
		}
		if d != nil && !ps.downAt.IsZero() && d.lastHandshake.After(ps.downAt) {
			ps.downAt = time.Time{}
			n.log.Info("relay answers again", "relay", n.applied[k].name)
		}
	}
	relays := n.directRelays(dev, now)
	for k := range n.applied {
		ps := n.paths[k]
		d := dev.peers[k]
		via, relayed := n.relayVia[k]
		switch {
		case n.reachedLocked(dev, k, now):
			if relayed {
				delete(n.relayVia, k)
				changed = true
				n.log.Info("member reached directly again", "peer", n.applied[k].name)
			}
		case relayed && (!direct(dev, via, now) || n.relayDown(via)):
			delete(n.relayVia, k)
			changed = true
			if r, ok := relays.pick(k); ok {
				n.relayVia[k] = r
				n.log.Warn("relay lost; relaying through the next relay", "peer", n.applied[k].name, "relay", n.applied[via].name, "next", n.applied[r].name)
			} else {
				n.log.Warn("relay lost", "peer", n.applied[k].name, "relay", n.applied[via].name)
			}
		case relayed:
			if d != nil && d.endpoint.IsValid() && now.Sub(ps.probed) >= n.probeInterval() {
				ps.probed = now
				// As a retry: one initiation per probe, not a fresh
				// round of WireGuard's own retries.
				if p := n.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
					p.SendHandshakeInitiation(true)
				}
			}
		case n.punchFailed(ps, d, now):
			if r, ok := relays.pick(k); ok {
				n.relayVia[k] = r
				changed = true
				n.log.Info("no direct handshake; relaying", "peer", n.applied[k].name, "relay", n.applied[r].name, "waited", now.Sub(ps.endpointSince).Round(time.Second))
			}
		}
	}
	if changed {
		n.rerouteLocked()
	}
	for k, ps := range n.paths {
		if _, ok := n.applied[k]; !ok {
			delete(n.paths, k)
			continue
		}
		path := PathNone
		if via, ok := n.relayVia[k]; ok {
			path = PathRelayPrefix + n.applied[via].name
		} else if n.reachedLocked(dev, k, now) {
			path = PathDirect
		}
		if path != ps.path {
			ps.path, ps.changed = path, now
		}
	}
}

// relayChoice holds the first two relay members in book order that this
// node reaches directly: the relay for a member is the first of them that
// is not the member itself. Computed once per round, so choosing costs
// nothing per member (a scan of the book per member was quadratic).
type relayChoice struct {
	first, second peerbook.Key
	n             int
}

// pick chooses the relay for k: the first relay member in book order,
// other than this node and k, that this node reaches directly.
func (c relayChoice) pick(k peerbook.Key) (peerbook.Key, bool) {
	switch {
	case c.n >= 1 && c.first != k:
		return c.first, true
	case c.n >= 2:
		return c.second, true
	}
	return peerbook.Key{}, false
}

// directRelays finds the relays pick chooses from. A relay member finds
// none: it reaches members directly or not at all. Two relays that each
// relayed an unreachable member through the other would pass its packets
// back and forth and lose them. Runs on the loop.
func (n *Node) directRelays(dev *deviceState, now time.Time) relayChoice {
	var c relayChoice
	if self, _ := n.book.PeerByKey(n.self); self.Relay {
		return c
	}
	for i := range n.book.Peers {
		p := &n.book.Peers[i]
		if !p.Relay || p.PublicKey == n.self {
			continue
		}
		if _, ok := n.applied[p.PublicKey]; ok && direct(dev, p.PublicKey, now) && !n.relayDown(p.PublicKey) {
			if c.n == 0 {
				c.first = p.PublicKey
			} else {
				c.second = p.PublicKey
			}
			if c.n++; c.n == 2 {
				break
			}
		}
	}
	return c
}

// rerouteLocked recomputes every member's allowed IPs from n.relayVia and
// writes the entries that changed, with update_only so sessions stay.
// Runs on the loop.
func (n *Node) rerouteLocked() {
	next := make(map[peerbook.Key]*peerConfig, len(n.applied))
	for k, pc := range n.applied {
		c := *pc
		c.allowedIPs = c.own
		next[k] = &c
	}
	n.routeRelays(n.book, next)
	// Only routes differ, so the transaction names only allowed IPs.
	d := diffPeers(n.applied, next, n.book.Peers)
	if d.empty() {
		return
	}
	unlock := n.lazyLock() // see apply
	defer unlock()
	if err := n.dev.IpcSet(d.transaction()); err != nil {
		n.log.Error("cannot reroute members", "err", err)
		return
	}
	if n.lazy != nil {
		n.lazy.syncLocked(next)
	}
	n.applied = next
}

// relayPrefixes are the prefixes a relay node forwards to: every other
// member's addresses and subnets.
func relayPrefixes(book *peerbook.Book, self peerbook.Key) []netip.Prefix {
	var out []netip.Prefix
	for i := range book.Peers {
		if book.Peers[i].PublicKey != self {
			out = append(out, book.Peers[i].AllowedIPs()...)
		}
	}
	return out
}

func (n *Node) probeInterval() time.Duration {
	if n.probeEvery > 0 {
		return n.probeEvery
	}
	return directProbeEvery
}

func (n *Node) relayWait() time.Duration {
	if n.relayAfter > 0 {
		return n.relayAfter
	}
	return relayAfter
}

// punchFailed reports whether a member without a handshake should be
// relayed: its endpoint is known and enough initiations went unanswered
// (the last seen at this tick), or relayAfter has passed since.
func (n *Node) punchFailed(ps *pathState, d *devicePeer, now time.Time) bool {
	if ps.endpointSince.IsZero() || d == nil {
		return false
	}
	if now.Sub(ps.endpointSince) >= n.relayWait() {
		return true
	}
	if n.relayAfter > 0 {
		return false // tests that set the wait want exactly it
	}
	if ps.failedAt.IsZero() && d.rx == ps.rxAtEndpoint && d.tx-ps.txAtEndpoint >= relayInitiations*initiationSize {
		ps.failedAt = now
	}
	// No further wait for an answer: the second initiation left within
	// the last tick, the first over 5 s ago, and should an answer still
	// come, its handshake routes the member directly again at once.
	return !ps.failedAt.IsZero() && d.rx == ps.rxAtEndpoint
}

// watchLocked checks on k, a relay in use or a member reached directly
// that is being sent to: a handshake when nothing came from it for
// relayQuiet, and true when nothing came for relayDeadAfter despite that.
// Runs on the loop.
func (n *Node) watchLocked(k peerbook.Key, ps *pathState, d *devicePeer, now time.Time) bool {
	if d == nil || !ps.downAt.IsZero() {
		return false
	}
	quiet, dead := now.Sub(ps.rxAt), relayDeadAfter
	if n.deadAfter > 0 {
		dead = n.deadAfter
	}
	if quiet >= dead && !ps.watched.IsZero() && ps.watched.After(ps.rxAt) {
		return true
	}
	if quiet >= relayQuiet && now.Sub(ps.watched) >= relayQuiet {
		ps.watched = now
		if p := n.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
			p.SendHandshakeInitiation(true)
		}
	}
	return false
}

// pathBrokenLocked handles a member reached directly that stopped
// answering, as after a NAT router lost or changed its mapping: it counts
// as unreachable until something comes from it again, so it is looked up
// at once and then as often as an unreachable member, punched to afresh
// (the relay decision starts over) and relayed if that fails. This node
// also starts a handshake with every registry member, so that they see its
// own mapping as the NAT has it now. Runs on the loop.
func (n *Node) pathBrokenLocked(k peerbook.Key, ps *pathState, now time.Time) {
	ps.brokenAt = now
	ps.endpointSince, ps.failedAt = time.Time{}, time.Time{}
	delete(n.discoverNext, k)
	n.log.Warn("member does not answer; looking for a new path", "peer", n.applied[k].name, "quiet", now.Sub(ps.rxAt).Round(100*time.Millisecond))
	for i := range n.book.Peers {
		p := &n.book.Peers[i]
		if !p.Registry || p.PublicKey == n.self || p.PublicKey == k {
			continue
		}
		if wp := n.dev.LookupPeer(device.NoisePublicKey(p.PublicKey)); wp != nil {
			wp.SendHandshakeInitiation(true)
		}
	}
}

// reachedLocked reports whether k is reached directly: a recent handshake,
// and it has not stopped answering since. Runs on the loop.
func (n *Node) reachedLocked(dev *deviceState, k peerbook.Key, now time.Time) bool {
	if !direct(dev, k, now) {
		return false
	}
	ps := n.paths[k]
	return ps == nil || ps.brokenAt.IsZero()
}

// relayDown reports whether relay k was found down and has not answered
// since. Runs on the loop.
func (n *Node) relayDown(k peerbook.Key) bool {
	ps := n.paths[k]
	return ps != nil && !ps.downAt.IsZero()
}
