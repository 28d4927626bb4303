package node

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Lazy peers. A wireguard-go peer costs tens of kilobytes (its queues)
// and, while it has an endpoint and never answers, a handshake initiation
// every 5 s, restarted by every keepalive. A member that has exchanged
// nothing for a while is therefore removed from the device and kept here
// as a small record (idleRecord); Status shows its path as "idle". It is
// configured again, synchronously, by
//
//   - the first packet this node sends to one of its addresses
//     (lazyDevice, on the device's outbound side, in both modes), which
//     wireguard-go then queues while it makes the handshake, and
//   - a handshake initiation from it (lazyBind peeks at the initiator's
//     static key before the device sees the message).
//
// A member goes idle (idleDue) when either
//
//   - it has never answered since it was configured: no handshake and no
//     byte received for lazyUnanswered (about six of WireGuard's 5 s
//     handshake attempts). This is the back-off: the retries stop until
//     traffic or the member itself wakes it; or
//   - it answered once but nothing was received from it, and no handshake
//     completed, for lazyQuiet. lazyQuiet exceeds WireGuard's
//     RejectAfterTime (180 s), so by then the member's own session with
//     this node has expired too: its next packet to this node starts a
//     handshake (which wakes it here) instead of using a session this
//     node no longer has.
//
// Members the node needs configured are exempt (lazyExemptLocked): relays,
// registries, members relayed or relaying, members waiting for a registry
// lookup. While this node has no endpoint in the book no member can
// initiate to it, so none goes idle.
//
// The node drives it through a narrow interface: observe gets the tick's
// device snapshot; configure and remove are the two node functions it
// calls; syncLocked keeps an idle member's record current when the node
// changes what it wants for it (a new book, DNS, a registry answer).
// lazy.mu orders the node's own device writes against wakes, which come
// from wireguard-go's receive and TUN goroutines and so must never wait for
// n.mu.

const (
	lazyUnanswered = 30 * time.Second
	lazyQuiet      = 200 * time.Second
)

// PathIdle is the Status path of a member removed from the device until
// traffic to or from it.
const PathIdle = "idle"

// idleRecord is what the node keeps of an idle member.
type idleRecord struct {
	// cfg is what to configure on wake, kept current by syncLocked.
	cfg *peerConfig
	// last are the device's facts when the member went idle, with the
	// counters of all its activations (for Status and metrics).
	last devicePeer
	// cfgEndpoint is cfg.endpoint when the member went idle: the device's
	// endpoint (it may have roamed) is used on wake unless cfg changed.
	cfgEndpoint netip.AddrPort
	since       time.Time
	// woken is set once the member is configured again (or left the
	// book); lookups through an older routes table skip it.
	woken atomic.Bool
}

// activeState is what the idle policy tracks of a configured member.
type activeState struct {
	since time.Time // configured or woken
	rx    uint64    // the device's rx counter at the last observe
	rxAt  time.Time // when rx last grew; zero if not since since
}

// counters are a member's byte counts from earlier activations: the
// device's restart at zero every time a member is configured again.
type counters struct{ rx, tx uint64 }

// lazyView is what Status reads of the lazy state. It does not change once
// published; a member woken since shows through its record's woken flag.
type lazyView struct {
	idle  map[peerbook.Key]*idleRecord
	bases map[peerbook.Key]counters
}

type lazyPeers struct {
	log *slog.Logger
	// configure adds a member to the device with pc; remove removes one.
	// They write the device only and take no node lock.
	configure func(pc *peerConfig) error
	remove    func(keys []peerbook.Key) error
	// devWrap and bindWrap carry the routes table and the idle flag to
	// the data path.
	dev               *lazyDevice
	quiet, unanswered time.Duration
	now               func() time.Time

	mu     sync.Mutex
	closed bool
	idle   map[peerbook.Key]*idleRecord
	active map[peerbook.Key]*activeState
	bases  map[peerbook.Key]counters

	nIdle atomic.Int64 // len(idle), for the receive path's fast check
	view  atomic.Pointer[lazyView]
	wakes atomic.Uint64
}

func newLazyPeers(log *slog.Logger, quiet, unanswered time.Duration) *lazyPeers {
	if quiet <= 0 {
		quiet = lazyQuiet
	}
	if unanswered <= 0 {
		unanswered = lazyUnanswered
	}
	return &lazyPeers{
		log: log, quiet: quiet, unanswered: unanswered, now: time.Now,
		idle:   map[peerbook.Key]*idleRecord{},
		active: map[peerbook.Key]*activeState{},
		bases:  map[peerbook.Key]counters{},
	}
}

// anyIdle reports whether some member is idle; it takes no lock.
func (l *lazyPeers) anyIdle() bool { return l.nIdle.Load() > 0 }

// idleDue reports whether the member a describes, with device facts d,
// goes idle at now.
func (l *lazyPeers) idleDue(a *activeState, d *devicePeer, now time.Time) bool {
	heard := a.rxAt
	if d.lastHandshake.After(heard) {
		heard = d.lastHandshake
	}
	if heard.IsZero() {
		return now.Sub(a.since) >= l.unanswered
	}
	return now.Sub(heard) >= l.quiet
}

// observe updates the policy from dev, the tick's device snapshot, and
// removes from the device the members that are due, except those exempt
// says the node needs (nil: none may go idle). wanted is the node's
// configuration per member. It returns the members it made idle. Caller
// holds n.mu.
func (l *lazyPeers) observe(dev *deviceState, now time.Time, wanted map[peerbook.Key]*peerConfig, exempt func(peerbook.Key) bool) []peerbook.Key {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	var due []peerbook.Key
	for k, d := range dev.peers {
		a := l.active[k]
		if a == nil {
			a = &activeState{since: now, rx: d.rx}
			l.active[k] = a
			continue
		}
		if d.rx > a.rx {
			a.rx, a.rxAt = d.rx, now
		} else if d.rx < a.rx {
			a.rx = d.rx // the peer was removed and added again meanwhile
		}
		if exempt == nil || exempt(k) || wanted[k] == nil {
			continue
		}
		if l.idleDue(a, d, now) {
			due = append(due, k)
		}
	}
	for k := range l.active {
		if _, ok := dev.peers[k]; !ok {
			delete(l.active, k)
		}
	}
	if len(due) == 0 {
		return nil
	}
	if err := l.remove(due); err != nil {
		l.log.Error("cannot remove idle members from the device", "err", err)
		return nil
	}
	for _, k := range due {
		d := dev.peers[k]
		b := l.bases[k]
		b.rx += d.rx
		b.tx += d.tx
		l.bases[k] = b
		pc := wanted[k]
		rec := &idleRecord{cfg: pc, cfgEndpoint: pc.endpoint, since: now, last: *d}
		rec.last.rx, rec.last.tx = b.rx, b.tx
		l.idle[k] = rec
		delete(l.active, k)
		l.log.Debug("member idle", "peer", pc.name, "key", k.Short())
	}
	l.publishLocked()
	return due
}

// wake configures the idle member k again; it returns once the device has
// it, or at once when k is not idle. It takes no node lock: it runs on
// wireguard-go's goroutines.
func (l *lazyPeers) wake(k peerbook.Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wakeLocked(k)
}

func (l *lazyPeers) wakeLocked(k peerbook.Key) {
	rec, ok := l.idle[k]
	if !ok || l.closed {
		return
	}
	pc := *rec.cfg
	if rec.last.endpoint.IsValid() && rec.cfgEndpoint == pc.endpoint {
		pc.endpoint = rec.last.endpoint
	}
	if err := l.configure(&pc); err != nil {
		l.log.Error("cannot configure idle member", "peer", pc.name, "err", err)
		return
	}
	rec.woken.Store(true)
	delete(l.idle, k)
	l.nIdle.Store(int64(len(l.idle)))
	l.active[k] = &activeState{since: l.now()}
	l.wakes.Add(1)
	l.log.Debug("idle member woken", "peer", pc.name, "key", k.Short())
	// The routes table is rebuilt at the next change; until then k's
	// entry is skipped through rec.woken.
}

// lock and unlock bracket a device write of the node, with syncLocked, so
// that no wake configures a member from a record the write is changing.
func (l *lazyPeers) lock()   { l.mu.Lock() }
func (l *lazyPeers) unlock() { l.mu.Unlock() }

// syncLocked updates the idle records from wanted, the node's
// configuration after a change: a member no longer wanted is forgotten,
// the others are configured as wanted when they wake. Caller holds l.mu
// (lock) and n.mu.
func (l *lazyPeers) syncLocked(wanted map[peerbook.Key]*peerConfig) {
	if len(l.idle) == 0 {
		return
	}
	var wake []peerbook.Key
	for k, rec := range l.idle {
		pc, ok := wanted[k]
		if !ok {
			rec.woken.Store(true)
			delete(l.idle, k)
			delete(l.bases, k)
			continue
		}
		if !rec.cfg.endpoint.IsValid() && pc.endpoint.IsValid() {
			// It has an address now: configure it, so that this node
			// greets it and its keepalive runs, as for a new member.
			wake = append(wake, k)
		}
		rec.cfg = pc
	}
	for _, k := range wake {
		l.wakeLocked(k)
	}
	l.publishLocked()
}

// addIdleLocked records members that start idle, never configured in
// the device (startsIdle). Caller holds l.mu (lock); runs on the loop.
func (l *lazyPeers) addIdleLocked(pcs []*peerConfig) {
	if len(pcs) == 0 {
		return
	}
	now := l.now()
	for _, pc := range pcs {
		l.idle[pc.key] = &idleRecord{cfg: pc, cfgEndpoint: pc.endpoint, since: now}
	}
	l.publishLocked()
}

// startsIdle returns whether a member new in book starts idle: it has no
// endpoint, so the device could not send to it anyway; it initiates to
// this node (which has an endpoint) or traffic wakes it. Members that need
// to be configured stay out (see lazyExemptLocked): relays, registries,
// and, when the book has a registry, members waiting for a lookup.
func startsIdle(book *peerbook.Book, self *peerbook.Peer) func(p *peerbook.Peer, pc *peerConfig) bool {
	never := func(*peerbook.Peer, *peerConfig) bool { return false }
	if self.Endpoint.IsZero() {
		return never
	}
	for i := range book.Peers {
		if book.Peers[i].Registry {
			return never
		}
	}
	return func(p *peerbook.Peer, pc *peerConfig) bool {
		return !pc.endpoint.IsValid() && !p.Relay && p.Endpoint.IsZero()
	}
}

// setLocked updates one idle member's record, if it is idle. Caller holds
// l.mu (lock) and n.mu.
func (l *lazyPeers) setLocked(k peerbook.Key, pc *peerConfig) {
	if rec, ok := l.idle[k]; ok {
		rec.cfg = pc
		l.publishLocked()
	}
}

// publishLocked publishes the routes table, the idle count and the view.
// Caller holds l.mu.
func (l *lazyPeers) publishLocked() {
	l.nIdle.Store(int64(len(l.idle)))
	if l.dev != nil {
		l.dev.routes.Store(newIdleRoutes(l.idle))
	}
	v := &lazyView{
		idle:  make(map[peerbook.Key]*idleRecord, len(l.idle)),
		bases: make(map[peerbook.Key]counters, len(l.bases)),
	}
	for k, rec := range l.idle {
		v.idle[k] = rec
	}
	for k, b := range l.bases {
		v.bases[k] = b
	}
	l.view.Store(v)
}

// close stops all wakes: the device is about to close, and a wake inside
// wireguard-go's goroutines must not write to it meanwhile.
func (l *lazyPeers) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// isIdle reports whether v shows k idle now.
func (v *lazyView) isIdle(k peerbook.Key) (*idleRecord, bool) {
	if v == nil {
		return nil, false
	}
	rec, ok := v.idle[k]
	if !ok || rec.woken.Load() {
		return nil, false
	}
	return rec, true
}
