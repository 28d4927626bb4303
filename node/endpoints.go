package node

import (
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Several endpoints. A member whose book entry lists endpoints = [...] is
// configured with one of them at a time, its candidate: the first at
// start-up and whenever its list changes. While no handshake succeeds,
// the node moves to the next candidate every candidateWait, wrapping
// around; a hostname candidate is resolved (DDNS, as for endpoint) before
// it is used. Once a handshake succeeds the node stays on that candidate
// (WireGuard itself follows the member if it roams); when the session
// goes stale the node starts again from the first entry, which the book
// lists as preferred.

// WireGuard sends at most one initiation per 5 s (REKEY_TIMEOUT) to a
// member, and retries on its own every 5 s while it has something to send.
// So a candidate is left answerWait after an initiation was seen leaving
// for it (its transmit counter grew): WireGuard's next retry then goes to
// the next candidate, and each dead entry costs one retry period. Where
// nothing is sent (no keepalive, no traffic), the node moves on after
// candidateWait and initiates itself.
const (
	answerWait    = time.Second
	candidateWait = 6 * time.Second
)

// candidateState is where a member with several endpoints stands.
type candidateState struct {
	idx int
	// since is when candidate idx was configured, or when a handshake
	// last showed the path working.
	since time.Time
	// working: a handshake succeeded on this candidate and has not gone
	// stale since.
	working bool
	// tx is the member's transmit counter when the candidate was
	// configured; sent is when the counter was first seen above it.
	tx   uint64
	sent time.Time
	// resolving: the candidate is a hostname whose address is not
	// configured yet; from is the address configured before it.
	resolving bool
	from      netip.AddrPort
}

// sameEndpoints reports whether two book entries list the same endpoints
// in the same order.
func sameEndpoints(a, b *peerbook.Peer) bool {
	return a.Endpoint == b.Endpoint && slices.Equal(a.Endpoints, b.Endpoints)
}

// activeEndpointLocked returns the endpoint of p that the node uses now:
// its single endpoint, or its current candidate. p may be the entry of a
// book not applied yet: a changed list starts at its first entry. Caller
// runs on the loop.
func (n *Node) activeEndpointLocked(p *peerbook.Peer) peerbook.Endpoint {
	if len(p.Endpoints) < 2 {
		return p.Endpoint
	}
	st := n.cands[p.PublicKey]
	prev, ok := n.entries[p.PublicKey]
	if st == nil || !ok || !sameEndpoints(prev, p) || st.idx >= len(p.Endpoints) {
		return p.Endpoints[0]
	}
	return p.Endpoints[st.idx]
}

// keepCandidatesLocked drops the candidate state of members whose list
// changed or who left, as entries replaces n.entries. Runs on the loop.
func (n *Node) keepCandidatesLocked(entries map[peerbook.Key]*peerbook.Peer) {
	for k := range n.cands {
		p, ok := entries[k]
		prev, had := n.entries[k]
		if !ok || !had || len(p.Endpoints) < 2 || !sameEndpoints(prev, p) {
			delete(n.cands, k)
		}
	}
}

// rotateEndpointsLocked moves members with several endpoints and no
// working session to their next candidate, from dev, the tick's device
// snapshot. Runs on the loop.
func (n *Node) rotateEndpointsLocked(dev *deviceState, now time.Time) {
	stale := n.staleAfter
	if stale == 0 {
		stale = staleHandshake
	}
	// Only members with a list rotate: a scan of all 10,000 members every
	// tick was a fifth of an idle node's CPU.
	for _, k := range n.severalEndpoints {
		pc, ok := n.applied[k]
		entry := n.entries[k]
		if !ok || entry == nil || len(entry.Endpoints) < 2 {
			continue
		}
		if _, ok := n.cfg.EndpointOverrides[pc.name]; ok {
			continue
		}
		st := n.cands[k]
		if st == nil {
			st = &candidateState{since: now}
			n.cands[k] = st
		}
		d := dev.peers[k]
		if d == nil {
			continue
		}
		if !d.lastHandshake.IsZero() && now.Sub(d.lastHandshake) < stale && n.reachedLocked(dev, k, now) {
			st.working, st.since, st.sent = true, now, time.Time{}
			continue
		}
		if st.resolving && pc.endpoint != st.from {
			st.resolving, st.tx = false, d.tx // counted from now on
		}
		if st.sent.IsZero() && !st.resolving && d.tx > st.tx && d.endpoint == pc.endpoint && pc.endpoint.IsValid() {
			st.sent = now
		}
		next := st.idx + 1
		switch {
		case st.working:
			// The session went stale: start again from the preferred entry.
			next = 0
			st.working = false
		case !st.sent.IsZero() && now.Sub(st.sent) >= answerWait:
		case now.Sub(st.since) >= candidateWait:
		default:
			continue
		}
		st.idx, st.since, st.tx, st.sent = next%len(entry.Endpoints), now, d.tx, time.Time{}
		_, literal := entry.Endpoints[st.idx].Addr()
		st.resolving, st.from = !literal, pc.endpoint
		n.useCandidateLocked(pc, entry, st.idx)
	}
}

// useCandidateLocked configures entry's candidate i: a literal at once,
// followed by a handshake initiation; a hostname through the resolver,
// which applies it when its answer comes. Runs on the loop.
func (n *Node) useCandidateLocked(pc *peerConfig, entry *peerbook.Peer, i int) {
	ep := entry.Endpoints[i]
	ap, literal := ep.Addr()
	if !literal {
		n.ddns[pc.key] = &ddnsState{next: time.Time{}, backoff: firstRetry}
		n.log.Debug("trying the member's next endpoint", "peer", pc.name, "endpoint", ep.String(), "entry", i+1)
		return
	}
	delete(n.ddns, pc.key)
	if ap == pc.endpoint {
		n.initiateLocked(pc.key)
		return
	}
	if err := n.setEndpointLocked(pc, entry, ap); err != nil {
		n.log.Error("cannot set member endpoint", "peer", pc.name, "err", err)
		return
	}
	n.log.Info("trying the member's next endpoint", "peer", pc.name, "endpoint", ap.String(), "entry", i+1)
	n.initiateLocked(pc.key)
}

// initiateLocked starts a handshake with member k, counted as a retry so
// that WireGuard's own limit on attempts still holds. Should it cross an
// initiation of the member's (both sides then hold an unconfirmed
// session), the next rotation initiates again. Runs on the loop.
func (n *Node) initiateLocked(k peerbook.Key) {
	if p := n.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
		p.SendHandshakeInitiation(true)
	}
}
