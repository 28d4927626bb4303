package node

import (
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
// transaction. Members whose configuration is unchanged are not mentioned,
// so their sessions are untouched. looked are the lookups of the hostnames
// hostnamesToResolve listed for book, made since. Caller holds n.mu.
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
		if _, literal := p.Endpoint.Addr(); literal {
			delete(n.ddns, p.PublicKey) // no longer a hostname
		}
		want[p.PublicKey] = n.peerConfig(book, self, p, resolved)
	}
	n.routeRelays(book, want)

	var w uapiWriter
	changes := 0
	var startIdle []*peerConfig
	startIdleOK := startsIdle(book, self)
	for k, old := range n.applied {
		if _, ok := want[k]; !ok {
			w.peer(k)
			w.updateOnly()
			w.remove()
			changes++
			delete(n.ddns, k)
			n.log.Info("member removed", "peer", old.name, "key", k.Short())
		}
	}
	// Book order keeps the transaction deterministic.
	for i := range book.Peers {
		pc, ok := want[book.Peers[i].PublicKey]
		if !ok {
			continue
		}
		old, had := n.applied[pc.key]
		switch {
		case !had && startIdleOK(&book.Peers[i], pc):
			startIdle = append(startIdle, pc) // lazy.go: not in the device
			continue
		case !had:
			w.writePeer(pc, false)
			n.log.Debug("member added", "peer", pc.name, "key", pc.key.Short(), "endpoint", addrOrNone(pc.endpoint))
		case !old.equal(pc):
			w.writePeer(pc, true)
			n.log.Info("member updated", "peer", pc.name, "key", pc.key.Short(), "endpoint", addrOrNone(pc.endpoint))
		default:
			continue
		}
		changes++
	}
	// Idle members are not in the device: their update_only entries are
	// skipped there and applied to their records (syncLocked) instead.
	unlock := n.lazyLock()
	defer unlock()
	if changes > 0 {
		if err := n.dev.IpcSet(w.String()); err != nil {
			// The UAPI error text never contains key material, but do not
			// echo the transaction itself: it may.
			return fmt.Errorf("node: configure peers: %w", errors.Unwrap(err))
		}
	}
	if n.lazy != nil {
		n.lazy.addIdleLocked(startIdle)
		n.lazy.syncLocked(want)
	}
	n.applied = want
	n.entries = entries
	n.book = book
	return nil
}

// peerConfig computes what the device should know about member p.
func (n *Node) peerConfig(book *peerbook.Book, self, p *peerbook.Peer, resolved map[peerbook.Key]netip.AddrPort) *peerConfig {
	pc := &peerConfig{
		name:     p.Name,
		key:      p.PublicKey,
		own:      p.AllowedIPs(),
		endpoint: n.endpointOf(p, resolved),
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
// Caller holds n.mu.
func (n *Node) endpointOf(p *peerbook.Peer, resolved map[peerbook.Key]netip.AddrPort) netip.AddrPort {
	if ap, ok := n.cfg.EndpointOverrides[p.Name]; ok {
		return ap
	}
	if p.Endpoint.IsZero() {
		// A member behind NAT: whatever a registry last told us.
		return n.discovered[p.PublicKey]
	}
	if ap, ok := p.Endpoint.Addr(); ok {
		return ap
	}
	if ap, ok := resolved[p.PublicKey]; ok {
		return ap
	}
	// Unchanged hostname (the resolver loop keeps it current), or a name
	// that does not resolve right now: keep what the device had, so a DNS
	// hiccup cannot cut a working tunnel.
	if old, ok := n.applied[p.PublicKey]; ok {
		if prev, ok := n.entries[p.PublicKey]; ok && prev.Endpoint == p.Endpoint {
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
