package node

import (
	"bytes"
	"context"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Start-up greetings. A node that starts sends a handshake initiation to
// members whose endpoint it knows, so members holding a session with its
// previous run switch at once instead of after WireGuard's 15 s no-reply
// timeout.
//
// When both members of a pair greet each other at the same moment (every
// member of a mesh started together), the initiations cross: each side
// answers the other's initiation, which replaces its own pending one, so
// both responses are dropped and each side holds only an unconfirmed
// responder session. wireguard-go would retry after 5 s, but the response
// it sent counts as a handshake sent, so the retry is skipped when it falls
// less than 5 s after that response (its retry jitter is at most 334 ms),
// and a skipped retry is not rescheduled: the pair then has no session
// until traffic flows. 32 members started together left 3 to 16 pairs so.
//
// The rule: of two members, the one with the lower public key greets at
// start-up; the other waits greetAnswerWait for that initiation and greets
// only if no handshake has completed by then (the other member runs an
// older incarnation's session, or was not up yet). Members that still have
// no handshake are greeted again at the later offsets of greetRounds, with
// backoff, and then no more: a member that never answers costs WireGuard's
// own 90 s of retries plus at most len(greetRounds)-1 initiations.

// greetRounds are the offsets from start-up at which members without a
// handshake are greeted again (plus up to greetJitter each). Round 0 is the
// higher key's greeting. The gaps exceed WireGuard's 5 s rekey timeout, so
// a round's initiation is never skipped because of the previous round's.
var greetRounds = []time.Duration{
	1 * time.Second,
	7 * time.Second,
	15 * time.Second,
	31 * time.Second,
	63 * time.Second,
}

// greetJitter spreads a round over time, so that two members started at
// the same moment do not greet each other again at the same moment.
const greetJitter = 500 * time.Millisecond

// greetsFirst reports whether self greets other at start-up: the lower
// public key does. Exactly one of two distinct members greets first.
func greetsFirst(self, other peerbook.Key) bool {
	return bytes.Compare(self[:], other[:]) < 0
}

// greetMember is what a greeting round knows of one member.
type greetMember struct {
	key         peerbook.Key
	hasEndpoint bool
	handshake   bool // the device has completed a handshake with it
	// cannotGreet: the member has no endpoint for this node (this node
	// has none in the book), so it cannot greet, nothing can cross, and
	// this node greets it at start-up whichever key is lower.
	cannotGreet bool
}

// greetsAtStart reports whether self greets m at start-up.
func greetsAtStart(self peerbook.Key, m greetMember) bool {
	return m.cannotGreet || greetsFirst(self, m.key)
}

// greetTargets returns the members self greets in round (0 is the first
// of greetRounds; -1 is start-up itself): members with an endpoint and no
// handshake; at start-up only those with a higher key, in round 0 only those
// with a lower key (the others were greeted at start-up and WireGuard is
// still retrying them).
func greetTargets(self peerbook.Key, round int, members []greetMember) []peerbook.Key {
	var out []peerbook.Key
	for _, m := range members {
		if !m.hasEndpoint || m.handshake || m.key == self {
			continue
		}
		switch round {
		case -1:
			if !greetsAtStart(self, m) {
				continue
			}
		case 0:
			if greetsAtStart(self, m) {
				continue
			}
		}
		out = append(out, m.key)
	}
	return out
}

// greetStart greets the members this node greets first. Runs in Up.
func (n *Node) greetStart(ctx context.Context) {
	unreachable := n.selfUnreachable()
	members := make([]greetMember, 0, len(n.applied))
	for k, pc := range n.applied {
		members = append(members, greetMember{key: k, hasEndpoint: pc.endpoint.IsValid(), cannotGreet: unreachable})
	}
	n.greetInBackground(ctx, greetTargets(n.self, -1, members), false)
}

// greetRoundLocked returns the members to greet in round, from dev, the
// tick's device snapshot, and whether any member with an endpoint still
// has no handshake. Runs on the loop.
func (n *Node) greetRoundLocked(round int, dev *deviceState) ([]peerbook.Key, bool) {
	unreachable := n.selfUnreachable()
	members := make([]greetMember, 0, len(n.applied))
	pending := false
	for k, pc := range n.applied {
		m := greetMember{key: k, hasEndpoint: pc.endpoint.IsValid(), cannotGreet: unreachable}
		if d, ok := dev.peers[k]; ok {
			m.handshake = !d.lastHandshake.IsZero()
			m.hasEndpoint = m.hasEndpoint || d.endpoint.IsValid()
		}
		pending = pending || (m.hasEndpoint && !m.handshake)
		members = append(members, m)
	}
	return greetTargets(n.self, round, members), pending
}

// selfUnreachable reports whether this node has no endpoint in the book,
// so that no member can greet it first. Runs on the loop.
func (n *Node) selfUnreachable() bool {
	self, ok := n.book.PeerByKey(n.self)
	return ok && self.Endpoint.IsZero()
}

// greetInBackground starts a handshake with each member of keys, from a
// goroutine counted with the loops (they end before the device closes), so
// neither Up nor the loop waits: at 10,000 members a greeting is up to
// 5,000 initiations of two X25519 each, half a second of CPU. It needs no
// node lock: the device looks its peers up itself, and a member gone idle
// meanwhile is simply not found.
func (n *Node) greetInBackground(ctx context.Context, keys []peerbook.Key, retry bool) {
	if len(keys) == 0 {
		return
	}
	dev := n.dev
	n.loops.Add(1)
	go func() {
		defer n.loops.Done()
		for _, k := range keys {
			if ctx.Err() != nil {
				return
			}
			if p := dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
				p.SendHandshakeInitiation(retry)
			}
		}
	}()
}
