package node

import (
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Paths. A member is reached directly when a handshake with it succeeded
// recently. When its endpoint has been known for relayAfter without any
// handshake (both sides behind NATs that punching cannot open), traffic to
// it goes through a relay member instead: its prefixes move to the relay's
// peer entry, and the relay forwards in userspace (relayDevice). The other
// side comes to the same conclusion on its own and picks the same relay,
// the first relay member in book order that it reaches, so both directions
// agree. The direct entry keeps its endpoint and keepalive and starts a
// handshake every directProbeEvery, so the moment a direct handshake
// succeeds the member is routed directly again. A relay
// member never relays: its paths are direct or none.

// relayAfter bounds how long a member with a known endpoint may stay
// without a handshake before it is relayed. WireGuard retries a handshake
// every 5 s, so this allows two retries.
const relayAfter = 12 * time.Second

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
// longer usable under book are dropped. Caller holds n.mu.
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
// device snapshot. Caller holds n.mu.
func (n *Node) updatePathsLocked(dev *deviceState, now time.Time) {
	if n.dev == nil || n.book == nil {
		return
	}
	changed := false
	relays := n.directRelays(dev, now)
	for k := range n.applied {
		ps := n.paths[k]
		if ps == nil {
			ps = &pathState{changed: now, path: PathNone}
			n.paths[k] = ps
		}
		d := dev.peers[k]
		if d != nil && d.endpoint.IsValid() {
			if ps.endpointSince.IsZero() {
				ps.endpointSince = now
			}
		} else {
			ps.endpointSince = time.Time{}
		}
		via, relayed := n.relayVia[k]
		switch {
		case direct(dev, k, now):
			if relayed {
				delete(n.relayVia, k)
				changed = true
				n.log.Info("member reached directly again", "peer", n.applied[k].name)
			}
		case relayed:
			if !direct(dev, via, now) {
				delete(n.relayVia, k)
				changed = true
				n.log.Warn("relay lost", "peer", n.applied[k].name, "relay", n.applied[via].name)
				break
			}
			if d != nil && d.endpoint.IsValid() && now.Sub(ps.probed) >= n.probeInterval() {
				ps.probed = now
				// As a retry: one initiation per probe, not a fresh
				// round of WireGuard's own retries.
				if p := n.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
					p.SendHandshakeInitiation(true)
				}
			}
		case !ps.endpointSince.IsZero() && now.Sub(ps.endpointSince) >= n.relayWait():
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
		} else if direct(dev, k, now) {
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
// back and forth and lose them. Caller holds n.mu.
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
		if _, ok := n.applied[p.PublicKey]; ok && direct(dev, p.PublicKey, now) {
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
// Caller holds n.mu.
func (n *Node) rerouteLocked() {
	next := make(map[peerbook.Key]*peerConfig, len(n.applied))
	for k, pc := range n.applied {
		c := *pc
		c.allowedIPs = c.own
		next[k] = &c
	}
	n.routeRelays(n.book, next)
	var w uapiWriter
	changes := 0
	for i := range n.book.Peers {
		k := n.book.Peers[i].PublicKey
		pc, ok := next[k]
		if !ok || n.applied[k].equal(pc) {
			continue
		}
		w.peer(k)
		w.updateOnly()
		w.allowedIPs(pc.allowedIPs)
		changes++
	}
	if changes == 0 {
		return
	}
	unlock := n.lazyLock() // see apply
	defer unlock()
	if err := n.dev.IpcSet(w.String()); err != nil {
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
