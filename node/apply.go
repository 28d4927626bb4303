package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// resolveTimeout bounds the DNS lookup of one endpoint hostname.
const resolveTimeout = 5 * time.Second

// apply brings the device from n.applied to book: it adds new members,
// removes departed ones and updates changed ones in place, in one UAPI
// transaction (diffPeers). Members whose configuration is unchanged are not
// mentioned, so their sessions are untouched. looked are the lookups of the
// hostnames hostnamesToResolve listed for book, made since. Runs on the
// loop, or in Up before it starts.
func (n *Node) apply(book *peerbook.Book, looked []resolveResult) error {
	self, ok := book.PeerByKey(n.self)
	if !ok {
		return fmt.Errorf("node: this node's public key %s is not in the peer book %s", n.self, book.Source)
	}
	resolved := n.recordResolved(book, looked)
	want := make(map[peerbook.Key]*peerConfig, len(book.Peers))
	entries := make(map[peerbook.Key]*peerbook.Peer, len(book.Peers))
	for i := range book.Peers {
		p := &book.Peers[i]
		entries[p.PublicKey] = p
		if p.PublicKey == n.self {
			continue
		}
		if _, literal := n.activeEndpointLocked(p).Addr(); literal {
			delete(n.ddns, p.PublicKey) // no longer a hostname
		}
		want[p.PublicKey] = n.peerConfig(book, self, p, resolved)
	}
	n.routeRelays(book, want)
	n.warnExitLocked(book)

	d := diffPeers(n.applied, want, book.Peers)
	// New members with no endpoint start idle (lazy.go): they stay out of
	// the device until they initiate or traffic needs them.
	var startIdle []*peerConfig
	if n.lazy != nil {
		startIdleOK := startsIdle(book, self)
		kept := d.add[:0:0]
		for _, pc := range d.add {
			if startIdleOK(entries[pc.key], pc) {
				startIdle = append(startIdle, pc)
			} else {
				kept = append(kept, pc)
			}
		}
		d.add = kept
	}
	// Idle members are not in the device: their update_only entries are
	// skipped there and applied to their records (syncLocked) instead.
	unlock := n.lazyLock()
	defer unlock()
	if !d.empty() {
		// Status answers from the snapshot meanwhile (Reload holds
		// n.bookWrite): a device read would wait for the transaction.
		err := n.dev.IpcSet(d.transaction())
		if err != nil {
			// The UAPI error text never contains key material, but do not
			// echo the transaction itself: it may.
			return fmt.Errorf("node: configure peers: %w", errors.Unwrap(err))
		}
	}
	for _, pc := range d.remove {
		delete(n.ddns, pc.key)
		n.log.Info("member removed", "peer", pc.name, "key", pc.key.Short())
	}
	for _, pc := range d.add {
		n.log.Debug("member added", "peer", pc.name, "key", pc.key.Short(), "endpoint", addrOrNone(pc.endpoint))
	}
	for _, u := range d.update {
		n.log.Info("member updated", "peer", u.to.name, "key", u.to.key.Short(), "endpoint", addrOrNone(u.to.endpoint))
	}
	if n.lazy != nil {
		n.lazy.addIdleLocked(startIdle)
		n.lazy.syncLocked(want)
	}
	n.applied = want
	n.syncExitEndpointsLocked()
	n.keepCandidatesLocked(entries)
	n.entries = entries
	n.severalEndpoints = n.severalEndpoints[:0]
	for i := range book.Peers {
		if len(book.Peers[i].Endpoints) >= 2 {
			n.severalEndpoints = append(n.severalEndpoints, book.Peers[i].PublicKey)
		}
	}
	n.book = book
	if v := n.view.Load(); v != nil {
		n.publishView(v.up)
	} else {
		n.publishView(false)
	}
	return nil
}

// peerDiff is what brings a device from one set of member configurations
// to another.
type peerDiff struct {
	remove []*peerConfig // departed members, by key
	add    []*peerConfig // new members, in book order
	update []peerUpdate  // changed members, in book order
}

// peerUpdate is one member whose configuration changes.
type peerUpdate struct{ from, to *peerConfig }

// diffPeers compares the applied configurations with the wanted ones. It
// is pure: it reads its arguments only and changes none of them. order,
// the book's members, fixes the order of additions and updates, so the
// transaction is the same for the same input; members in want but not in
// order are not added.
func diffPeers(applied, want map[peerbook.Key]*peerConfig, order []peerbook.Peer) peerDiff {
	var d peerDiff
	for k, pc := range applied {
		if _, ok := want[k]; !ok {
			d.remove = append(d.remove, pc)
		}
	}
	slices.SortFunc(d.remove, func(a, b *peerConfig) int { return bytes.Compare(a.key[:], b.key[:]) })
	for i := range order {
		pc, ok := want[order[i].PublicKey]
		if !ok {
			continue
		}
		old, had := applied[pc.key]
		switch {
		case !had:
			d.add = append(d.add, pc)
		case !old.equal(pc):
			d.update = append(d.update, peerUpdate{from: old, to: pc})
		}
	}
	return d
}

func (d *peerDiff) empty() bool {
	return len(d.remove) == 0 && len(d.add) == 0 && len(d.update) == 0
}

// transaction renders d as one UAPI set transaction: removals, then
// additions, then updates, all with update_only but the additions, so
// members keep their sessions (and an idle member, not in the device,
// is left alone; lazy.syncLocked carries the change to its record).
//
// An update whose endpoint and keepalive are unchanged (its routes moved:
// a relay, a subnet) writes only the allowed IPs, so an endpoint the
// device learnt from the member's packets (roaming) stays. Any other
// update is written whole (endpoint when known, keepalive, allowed IPs):
// writing only the endpoint when it changed made TestDDNSEndpoints fail
// (a member's endpoint learnt from its handshake before its name
// resolved) for a reason not yet understood.
func (d *peerDiff) transaction() string {
	var w uapiWriter
	for _, pc := range d.remove {
		w.peer(pc.key)
		w.updateOnly()
		w.remove()
	}
	for _, pc := range d.add {
		w.writePeer(pc, false)
	}
	for _, u := range d.update {
		if u.from.endpoint == u.to.endpoint && u.from.keepalive == u.to.keepalive {
			w.peer(u.to.key)
			w.updateOnly()
			w.allowedIPs(u.to.allowedIPs)
			continue
		}
		w.writePeer(u.to, true)
	}
	return w.String()
}

// diffOne is the diff that moves member pc to next: one update, or none.
func diffOne(pc, next *peerConfig) peerDiff {
	if pc.equal(next) {
		return peerDiff{}
	}
	return peerDiff{update: []peerUpdate{{from: pc, to: next}}}
}

// peerConfig computes what the device should know about member p.
func (n *Node) peerConfig(book *peerbook.Book, self, p *peerbook.Peer, resolved map[peerbook.Key]netip.AddrPort) *peerConfig {
	pc := &peerConfig{
		name:     p.Name,
		key:      p.PublicKey,
		own:      p.AllowedIPs(),
		endpoint: n.endpointOf(p, resolved),
	}
	if n.isExitNode(book, p) {
		pc.own = append(pc.own, defaultPrefixes...)
	}
	pc.allowedIPs = pc.own
	// A keepalive can only be sent where the member's address is known.
	// Setting it without one would make wireguard-go try a handshake that
	// cannot leave, and then hold off the real one for the 5 s rekey
	// timeout once the address arrives. Set together with the endpoint,
	// it instead starts a handshake at once.
	if pc.endpoint.IsValid() {
		pc.keepalive = book.KeepaliveBetween(self, p)
	}
	return pc
}

// endpointOf returns where to send to member p, or an invalid AddrPort.
// Runs on the loop.
func (n *Node) endpointOf(p *peerbook.Peer, resolved map[peerbook.Key]netip.AddrPort) netip.AddrPort {
	if ap, ok := n.cfg.EndpointOverrides[p.Name]; ok {
		return ap
	}
	if p.Endpoint.IsZero() {
		// A member behind NAT: whatever a registry last told us.
		return n.discovered[p.PublicKey]
	}
	ep := n.activeEndpointLocked(p)
	if ap, ok := ep.Addr(); ok {
		return ap
	}
	if ap, ok := resolved[p.PublicKey]; ok {
		return ap
	}
	// Unchanged hostname (the resolver loop keeps it current), or a name
	// that does not resolve right now: keep what the device had, so a DNS
	// hiccup cannot cut a working tunnel.
	if old, ok := n.applied[p.PublicKey]; ok {
		if prev, ok := n.entries[p.PublicKey]; ok && sameEndpoints(prev, p) {
			return old.endpoint
		}
	}
	return netip.AddrPort{}
}

// resolve looks up a hostname endpoint, preferring IPv4 as wg(8) does.
func (n *Node) resolve(ctx context.Context, ep peerbook.Endpoint) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := n.cfg.Resolver.LookupNetIP(ctx, "ip", ep.Host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s has no addresses", ep.Host)
	}
	addrs = slices.Clone(addrs)
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		if a.Unmap().Is4() == b.Unmap().Is4() {
			return 0
		}
		if a.Unmap().Is4() {
			return -1
		}
		return 1
	})
	return netip.AddrPortFrom(addrs[0].Unmap(), ep.Port), nil
}

func addrOrNone(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "none"
	}
	return ap.String()
}
