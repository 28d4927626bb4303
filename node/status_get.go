package node

import (
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

func (n *Node) readListenPort() (uint16, error) {
	st, err := n.readDevice()
	if err != nil {
		return 0, err
	}
	return st.listenPort, nil
}

// nodeSnapshot is what readers get without n.mu: the device read of the
// last tick or change, the book in force then, and what only the node
// knows of each member, taken under n.mu at the same moment. Nothing in
// it changes once published; Status builds its answer from it.
type nodeSnapshot struct {
	head  Status // Status without Peers
	self  peerbook.Key
	book  *peerbook.Book
	dev   *deviceState
	facts []peerFacts // by index in book.Peers; nil without a device
}

// peerFacts is what the node, not the device, says of one member.
type peerFacts struct {
	path      string
	pathSince time.Time
	source    string
	changes   uint64
	// idle is the record of a member out of the device (lazy.go); base
	// its byte counts from earlier activations.
	idle *idleRecord
	base counters
}

// Status returns a snapshot of the node and every other member. Before Up
// it lists the book's members with no device facts.
//
// Status never waits for the node's lock. When the lock is free it reads
// the device and publishes a fresh snapshot; while it is held (a big book
// being applied, a tick) it answers from the snapshot the tick publishes
// every second and every applied change publishes at once, so a status
// asked during a reload shows the state before it, with handshakes,
// endpoints, byte counters and paths up to one tick (pathTick) old.
func (n *Node) Status() Status {
	if s := n.snap.Load(); s != nil {
		if !n.mu.TryLock() {
			return s.build()
		}
		n.publishStatusLocked(nil)
		s = n.snap.Load()
		n.mu.Unlock()
		if s != nil {
			return s.build()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev != nil {
		// Up is between applying the book and starting the tick.
		dev, _ := n.readDevice()
		return n.snapshotLocked(dev).build()
	}
	return n.snapshotLocked(nil).build()
}

// publishStatusLocked publishes a snapshot for Status from dev (read now
// when nil). Caller holds n.mu.
func (n *Node) publishStatusLocked(dev *deviceState) {
	if n.dev == nil || n.book == nil {
		n.snap.Store(nil)
		return
	}
	if dev == nil {
		var err error
		hint := 0
		if s := n.snap.Load(); s != nil && s.dev != nil {
			hint = len(s.dev.peers)
		}
		if dev, err = readDeviceState(n.dev, hint); err != nil {
			return
		}
	}
	n.snap.Store(n.snapshotLocked(dev))
}

// snapshotLocked takes what Status needs from the node, with dev's device
// facts, or none when dev is nil. Caller holds n.mu.
func (n *Node) snapshotLocked(dev *deviceState) *nodeSnapshot {
	book := n.book
	if book == nil {
		book = n.cfg.Book
	}
	self, _ := book.PeerByKey(n.self)
	s := &nodeSnapshot{
		head: Status{
			Name:       self.Name,
			PublicKey:  n.self.String(),
			Addresses:  self.Addresses,
			ListenPort: n.listenPort,
			Mode:       string(n.cfg.Mode),
			Interface:  n.ifname,
			BookSerial: book.Serial,
		},
		self: n.self,
		book: book,
		dev:  dev,
	}
	if dev == nil {
		return s
	}
	s.facts = make([]peerFacts, len(book.Peers))
	var lazy *lazyView
	if n.lazy != nil {
		lazy = n.lazy.view.Load()
	}
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == n.self {
			continue
		}
		f := &s.facts[i]
		f.changes = n.endpointChanges[p.PublicKey]
		// The path is computed from the same read as the handshake
		// shown, not taken from the path round's state, so they agree.
		f.path = PathNone
		if via, ok := n.relayVia[p.PublicKey]; ok {
			if r, ok := n.applied[via]; ok {
				f.path = PathRelayPrefix + r.name
			}
		} else if direct(dev, p.PublicKey, dev.read) {
			f.path = PathDirect
		}
		if st, ok := n.paths[p.PublicKey]; ok {
			f.pathSince = st.changed
		}
		f.source = n.endpointSource(p, dev)
		if lazy != nil {
			f.base = lazy.bases[p.PublicKey]
			if rec, ok := lazy.isIdle(p.PublicKey); ok {
				f.idle, f.path = rec, PathIdle
			}
		}
	}
	return s
}

// build makes the Status of s. It takes no lock: s does not change.
func (s *nodeSnapshot) build() Status {
	st := s.head
	book, dev := s.book, s.dev
	if len(book.Peers) > 1 {
		st.Peers = make([]PeerStatus, 0, len(book.Peers)-1)
	}
	inBook := 0
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == s.self {
			continue
		}
		ps := PeerStatus{
			Name:      p.Name,
			PublicKey: p.PublicKey.String(),
			Addresses: p.Addresses,
			Subnets:   p.Subnets,
		}
		if dev != nil {
			f := &s.facts[i]
			d, ok := dev.peers[p.PublicKey]
			if ok {
				inBook++
			}
			if ok && f.idle == nil {
				if d.endpoint.IsValid() {
					ps.Endpoint = d.endpoint.String()
				}
				ps.LastHandshake = d.lastHandshake
				ps.RxBytes, ps.TxBytes = f.base.rx+d.rx, f.base.tx+d.tx
			} else if f.idle != nil {
				// Out of the device: what it had when the member went idle.
				d := &f.idle.last
				if d.endpoint.IsValid() {
					ps.Endpoint = d.endpoint.String()
				}
				ps.LastHandshake = d.lastHandshake
				ps.RxBytes, ps.TxBytes = d.rx, d.tx
			}
			ps.EndpointChanges = f.changes
			ps.Path, ps.PathSince, ps.EndpointSource = f.path, f.pathSince, f.source
		}
		st.Peers = append(st.Peers, ps)
	}
	// Peers added behind wgmesh's back (wg set on the UAPI socket) are
	// shown too, so status never hides what the device really does. The
	// device never holds this node itself, so when every device peer was
	// matched above there is none.
	if dev != nil && inBook < len(dev.peers) {
		keys := make(map[peerbook.Key]bool, len(book.Peers))
		for i := range book.Peers {
			keys[book.Peers[i].PublicKey] = true
		}
		for k, d := range dev.peers {
			if keys[k] {
				continue
			}
			ps := PeerStatus{PublicKey: k.String(), NotInBook: true, LastHandshake: d.lastHandshake, RxBytes: d.rx, TxBytes: d.tx}
			if d.endpoint.IsValid() {
				ps.Endpoint = d.endpoint.String()
			}
			st.Peers = append(st.Peers, ps)
		}
	}
	return st
}

// endpointSource says where the endpoint the device uses for p came from.
// Caller holds n.mu.
func (n *Node) endpointSource(p *peerbook.Peer, dev *deviceState) string {
	d, ok := dev.peers[p.PublicKey]
	if !ok || !d.endpoint.IsValid() {
		return ""
	}
	pc, ok := n.applied[p.PublicKey]
	if !ok || pc.endpoint != d.endpoint {
		return "roaming"
	}
	switch {
	case n.cfg.EndpointOverrides[p.Name] == d.endpoint:
		return "config"
	case p.Endpoint.IsZero():
		return "registry"
	}
	if _, literal := p.Endpoint.Addr(); literal {
		return "book"
	}
	return "dns"
}
