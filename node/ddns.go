package node

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Endpoint hostnames (DDNS names) are resolved at start-up, then again
// every Config.ResolveInterval, and more often while a member is
// unreachable. A working endpoint (a recent handshake) is never replaced
// by a DNS answer, which may be stale: the rule wireguard-tools'
// reresolve-dns.sh follows.

// DefaultResolveInterval is how often hostnames are re-resolved when
// Config.ResolveInterval is zero.
const DefaultResolveInterval = 60 * time.Second

// staleHandshake is the age after which a member's session counts as
// broken: WireGuard rekeys a live session every 120 s (REKEY_AFTER_TIME),
// plus its 5 s rekey timeout and some slack, as reresolve-dns.sh uses.
const staleHandshake = 135 * time.Second

// firstRetry is the first back-off after a failed lookup; it doubles up
// to the resolve interval.
const firstRetry = time.Second

// resolveParallel bounds concurrent lookups at start-up and reload.
const resolveParallel = 16

// ddnsState schedules the next lookup of one member's hostname.
type ddnsState struct {
	next    time.Time
	backoff time.Duration
}

// resolveJob is one hostname endpoint to look up before a book is applied.
type resolveJob struct {
	key  peerbook.Key
	name string
	ep   peerbook.Endpoint
}

// resolveResult is a resolveJob's answer: an address, or err.
type resolveResult struct {
	resolveJob
	ap  netip.AddrPort
	err error
}

// hostnamesToResolve lists the hostname endpoints of members that are new
// or whose endpoint changed in book. Runs on the loop.
func (n *Node) hostnamesToResolve(book *peerbook.Book) []resolveJob {
	var todo []resolveJob
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == n.self || p.Endpoint.IsZero() {
			continue
		}
		if _, ok := n.cfg.EndpointOverrides[p.Name]; ok {
			continue
		}
		ep := n.activeEndpointLocked(p)
		if _, ok := ep.Addr(); ok {
			continue
		}
		if prev, ok := n.entries[p.PublicKey]; ok && sameEndpoints(prev, p) {
			continue
		}
		todo = append(todo, resolveJob{key: p.PublicKey, name: p.Name, ep: ep})
	}
	return todo
}

// resolveAll looks up jobs, resolveParallel at a time. It touches no node
// state and runs outside the loop: lookups can take resolveTimeout each,
// and the loop must go on meanwhile.
func (n *Node) resolveAll(ctx context.Context, jobs []resolveJob) []resolveResult {
	out := make([]resolveResult, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, resolveParallel)
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ap, err := n.resolve(ctx, j.ep)
			out[i] = resolveResult{resolveJob: j, ap: ap, err: err}
		}()
	}
	wg.Wait()
	return out
}

// recordResolved schedules the next lookup of every job (a failed one
// soon, with back-off) and returns the addresses found that book allows.
// Runs on the loop.
func (n *Node) recordResolved(book *peerbook.Book, results []resolveResult) map[peerbook.Key]netip.AddrPort {
	now := n.now()
	out := make(map[peerbook.Key]netip.AddrPort, len(results))
	for _, r := range results {
		if r.err == nil {
			r.err = endpointCaptured(book, r.ap)
		}
		if r.err != nil {
			n.log.Warn("cannot resolve member endpoint; will retry", "peer", r.name, "endpoint", r.ep.String(), "err", r.err)
			n.ddns[r.key] = &ddnsState{next: now.Add(firstRetry), backoff: firstRetry}
			continue
		}
		out[r.key] = r.ap
		n.ddns[r.key] = &ddnsState{next: now.Add(n.resolveInterval())}
	}
	return out
}

// endpointCaptured refuses a resolved endpoint inside a member's subnet:
// the book's literal endpoints are checked when it is parsed, a hostname
// only once it resolves. Routed into the mesh, the member's WireGuard
// packets would travel inside the tunnel they carry and never arrive.
func endpointCaptured(book *peerbook.Book, ap netip.AddrPort) error {
	if p, subnet, ok := book.SubnetCovering(ap.Addr()); ok {
		return fmt.Errorf("address %s is inside subnet %s of member %q and would be routed into the mesh; fix the DNS record or that member's subnets", ap.Addr(), subnet, p.Name)
	}
	return nil
}

func (n *Node) resolveInterval() time.Duration {
	if n.cfg.ResolveInterval > 0 {
		return n.cfg.ResolveInterval
	}
	return DefaultResolveInterval
}

// resolveTick is how often hostnames are checked for a due lookup.
func (n *Node) resolveTick() time.Duration {
	tick := min(n.resolveInterval(), time.Second)
	if n.staleAfter > 0 {
		tick = min(tick, n.staleAfter/2)
	}
	return tick
}

type dueLookup struct {
	key   peerbook.Key
	name  string
	ep    peerbook.Endpoint
	fresh bool // a recent handshake: the current endpoint works
}

// dueLookupsLocked lists the hostnames due for a lookup. Runs on the
// loop.
func (n *Node) dueLookupsLocked(now time.Time) []dueLookup {
	var due []dueLookup
	for k, st := range n.ddns {
		if now.Before(st.next) {
			continue
		}
		if p, ok := n.entries[k]; ok {
			ep := n.activeEndpointLocked(p)
			if _, literal := ep.Addr(); literal {
				delete(n.ddns, k)
				continue
			}
			due = append(due, dueLookup{key: k, name: p.Name, ep: ep})
		}
	}
	return due
}

// markFreshLocked marks the due members whose session works, from dev,
// the tick's device snapshot, and puts their next lookup an interval
// away: a working endpoint is kept. Runs on the loop.
func (n *Node) markFreshLocked(due []dueLookup, dev *deviceState, now time.Time) {
	stale := n.staleAfter
	if stale == 0 {
		stale = staleHandshake
	}
	for i := range due {
		if dev == nil {
			continue
		}
		if d, ok := dev.peers[due[i].key]; ok && !d.lastHandshake.IsZero() && now.Sub(d.lastHandshake) < stale {
			due[i].fresh = true
			if st, ok := n.ddns[due[i].key]; ok {
				st.next = now.Add(n.resolveInterval())
			}
		}
	}
}

// reresolve looks the due hostnames up outside the loop and posts the
// answers to it.
func (n *Node) reresolve(ctx context.Context, due []dueLookup) {
	for _, d := range due {
		if d.fresh {
			continue
		}
		ap, err := n.resolve(ctx, d.ep)
		if ctx.Err() != nil {
			return
		}
		n.post(resolvedEvent{lookup: d, ap: ap, err: err})
	}
}

// applyResolved records one lookup's result and, if the address changed,
// points the device at it with update_only (no new peer, no lost session).
// Runs on the loop.
func (n *Node) applyResolved(d dueLookup, ap netip.AddrPort, err error) {
	st, ok := n.ddns[d.key]
	pc, applied := n.applied[d.key]
	entry, inBook := n.entries[d.key]
	if !ok || !applied || !inBook || n.activeEndpointLocked(entry) != d.ep || n.dev == nil {
		return // the book changed meanwhile
	}
	if err == nil {
		err = endpointCaptured(n.book, ap)
	}
	if err != nil {
		st.backoff = min(max(2*st.backoff, firstRetry), n.resolveInterval())
		st.next = n.now().Add(st.backoff)
		n.log.Warn("cannot resolve member endpoint; will retry", "peer", d.name, "endpoint", d.ep.String(), "retry_in", st.backoff, "err", err)
		return
	}
	// Stale or unknown session: look again soon if the new address does
	// not help, backing off up to the interval.
	st.backoff = min(max(2*st.backoff, firstRetry*5), n.resolveInterval())
	st.next = n.now().Add(st.backoff)
	if ap == pc.endpoint {
		return
	}
	if err := n.setEndpointLocked(pc, entry, ap); err != nil {
		n.log.Error("cannot update member endpoint", "peer", d.name, "err", err)
		return
	}
	if len(entry.Endpoints) > 1 {
		n.initiateLocked(d.key) // a candidate: try it now
	}
	n.publishStatusLocked(nil)
	n.log.Info("member endpoint changed by DNS", "peer", d.name, "endpoint", d.ep.String(), "from", addrOrNone(pc.endpoint), "to", ap.String())
}

// setEndpointLocked points the device at a new endpoint for the member pc
// describes, with update_only (no new peer, no lost session), turning on
// the keepalive that needs a known endpoint. Runs on the loop.
func (n *Node) setEndpointLocked(pc *peerConfig, entry *peerbook.Peer, ap netip.AddrPort) error {
	next := *pc
	next.endpoint = ap
	self, _ := n.book.PeerByKey(n.self)
	next.keepalive = n.book.KeepaliveBetween(self, entry)
	d := diffOne(pc, &next)
	if d.empty() {
		return nil
	}
	unlock := n.lazyLock() // see apply
	defer unlock()
	if err := n.dev.IpcSet(d.transaction()); err != nil {
		return err
	}
	if n.lazy != nil {
		n.lazy.setLocked(pc.key, &next)
	}
	n.applied[pc.key] = &next
	n.endpointChanges[pc.key]++
	return nil
}
