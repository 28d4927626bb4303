package node

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/netstack"
	"github.com/wgmesh/wgmesh/peerbook"
)

func (n *Node) readListenPort() (uint16, error) {
	st, err := n.readDevice()
	if err != nil {
		return 0, err
	}
	return st.listenPort, nil
}

// nodeSnapshot is what readers get without waiting for the loop: the
// device read of the last tick or change, the book in force then, and what
// only the node knows of each member, taken on the loop at the same
// moment. Nothing in it changes once published; Status builds its answer
// from it.
type nodeSnapshot struct {
	head Status // Status without Peers
	self peerbook.Key
	book *peerbook.Book
	wg   *device.Device // nil before Up
	dev  *deviceState
	// devBefore: dev was read before book was applied, so a device peer
	// it lacks may just have been removed.
	devBefore bool
	facts     []peerFacts // by index in book.Peers; nil before Up
	// lazy is the idle members' view (immutable), looked up when Status
	// is built rather than copied into facts every tick.
	lazy *lazyView
	// filter's drop counters are read live by build (filterdev.go).
	filter *filterDevice
	// stack's TCP counters likewise, in netstack mode.
	stack *netstack.Stack
}

// peerFacts is what the node, not the device, says of one member. The
// path and the endpoint's source are derived from them and a device read
// when Status is built, so that they agree with the handshake shown.
type peerFacts struct {
	// via is the relay's name when the member is relayed.
	via string
	// broken: the member was reached directly and stopped answering.
	broken    bool
	pathSince time.Time
	// endpoint is the endpoint the node configured (applied): a device
	// endpoint that differs from it is "roaming".
	endpoint netip.AddrPort
	applied  bool
	// kind is where endpoint came from: "config", "registry", "book" or
	// "dns".
	kind    string
	changes uint64
	// idle is the record of a member out of the device (lazy.go); base
	// its byte counts from earlier activations. Both are filled from the
	// lazy view when Status is built (factsOf).
	idle *idleRecord
	base counters
}

// Status returns a snapshot of the node and every other member. Before Up
// it lists the book's members with no device facts.
//
// Status never waits for the node's loop: it builds its answer from the
// snapshot the loop publishes every tick and after every applied change,
// with a fresh read of the device, so handshakes, endpoints and byte
// counters are current. While the loop writes a book to the device, or is
// about to (wireguard-go holds its lock for the whole transaction, and a
// read would wait for it), it answers with the snapshot's own device read
// instead, so a status asked during a big reload shows the state before
// it, up to one tick (pathTick) old.
func (n *Node) Status() Status {
	s := n.snap.Load()
	if s == nil {
		return n.bareSnapshot().build(nil)
	}
	if s.wg != nil && n.bookWrite.TryRLock() {
		dev, err := readDeviceState(s.wg, len(s.dev.peers))
		n.bookWrite.RUnlock()
		if err == nil {
			return s.build(dev)
		}
	}
	return s.build(s.dev)
}

// bareSnapshot is the snapshot of a node that is not up: the book and the
// node's own facts, no device. It reads only what the loop publishes.
func (n *Node) bareSnapshot() *nodeSnapshot {
	book, ifname, port := n.cfg.Book, "", uint16(0)
	if v := n.view.Load(); v != nil {
		book, ifname, port = v.book, v.ifname, v.listenPort
	}
	self, _ := book.PeerByKey(n.self)
	return &nodeSnapshot{
		head: Status{
			Name:       self.Name,
			PublicKey:  n.self.String(),
			Addresses:  self.Addresses,
			ListenPort: port,
			Mode:       string(n.cfg.Mode),
			Interface:  ifname,
			BookSerial: book.Serial,
		},
		self: n.self,
		book: book,
	}
}

// publishStatusLocked publishes a snapshot for Status from dev, a device
// read of this tick. With dev nil (a change was applied) it keeps the last
// snapshot's read, at most a tick old, instead of reading the whole device
// again: Status reads the device afresh anyway, and the snapshot's own
// read only stands in for it while a book is being written. Only the first
// snapshot reads the device. Runs on the loop, or in Up.
func (n *Node) publishStatusLocked(dev *deviceState) {
	if n.dev == nil || n.book == nil {
		n.snap.Store(nil)
		return
	}
	reused := false
	if dev == nil {
		if last := n.snap.Load(); last != nil && last.dev != nil {
			dev, reused = last.dev, true
		} else {
			var err error
			if dev, err = readDeviceState(n.dev, 0); err != nil {
				return
			}
		}
	}
	s := n.snapshotLocked(dev)
	s.devBefore = reused
	n.snap.Store(s)
}

// snapshotLocked takes what Status needs from the node, with dev's device
// facts. Runs on the loop.
func (n *Node) snapshotLocked(dev *deviceState) *nodeSnapshot {
	s := n.bareSnapshot()
	book := n.book
	self, _ := book.PeerByKey(n.self)
	s.head.Name, s.head.Addresses, s.head.BookSerial = self.Name, self.Addresses, book.Serial
	s.head.ListenPort, s.head.Interface = n.listenPort, n.ifname
	s.book, s.wg, s.dev = book, n.dev, dev
	s.filter = n.filter
	s.stack = n.stack
	s.facts = make([]peerFacts, len(book.Peers))
	if n.lazy != nil {
		s.lazy = n.lazy.view.Load()
	}
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == n.self {
			continue
		}
		f := &s.facts[i]
		f.changes = n.endpointChanges[p.PublicKey]
		if via, ok := n.relayVia[p.PublicKey]; ok {
			if r, ok := n.applied[via]; ok {
				f.via = r.name
			}
		}
		if st, ok := n.paths[p.PublicKey]; ok {
			// A member that stopped answering is not direct, whatever
			// its last handshake says (paths.go, reachedLocked).
			f.broken = !st.brokenAt.IsZero()
			f.pathSince = st.changed
		}
		if pc, ok := n.applied[p.PublicKey]; ok {
			f.applied, f.endpoint = true, pc.endpoint
			f.kind = n.endpointKind(p, pc.endpoint)
		}
	}
	return s
}

// build makes the Status of s with dev, a device read (nil: none). It
// takes no lock: s does not change.
func (s *nodeSnapshot) build(dev *deviceState) Status {
	st := s.head
	book := s.book
	s.filter.nodeDrops(&st)
	if s.stack != nil {
		tcp := s.stack.TCPStats()
		st.TCP = &tcp
	}
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
			f := s.factsOf(i, p.PublicKey)
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
			ps.Path, ps.PathSince, ps.EndpointSource = f.path(dev, p.PublicKey), f.pathSince, f.source(dev, p.PublicKey)
			s.filter.peerDrops(&ps)
		}
		st.Peers = append(st.Peers, ps)
	}
	// Peers added behind wgmesh's back (wg set on the UAPI socket) are
	// shown too, so status never hides what the device really does. The
	// device never holds this node itself, so when every device peer was
	// matched above there is none. A read from before the book does not
	// count: its extra peers may be members the book just removed.
	if dev != nil && inBook < len(dev.peers) && !(dev == s.dev && s.devBefore) {
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

// factsOf returns the facts of book.Peers[i], k, with its idle record and
// counter base from the lazy view: a copy, since builds run concurrently.
func (s *nodeSnapshot) factsOf(i int, k peerbook.Key) *peerFacts {
	f := s.facts[i]
	if s.lazy != nil {
		f.base = s.lazy.bases[k]
		if rec, ok := s.lazy.isIdle(k); ok {
			f.idle = rec
		}
	}
	return &f
}

// path is the member's path as dev shows it: relayed, direct (a recent
// handshake) or none.
func (f *peerFacts) path(dev *deviceState, k peerbook.Key) string {
	switch {
	case f.idle != nil:
		return PathIdle
	case f.via != "":
		return PathRelayPrefix + f.via
	case !f.broken && direct(dev, k, dev.read):
		return PathDirect
	}
	return PathNone
}

// source says where the endpoint dev uses for member k came from.
func (f *peerFacts) source(dev *deviceState, k peerbook.Key) string {
	if f.idle != nil {
		// Out of the device: where its endpoint came from when it was.
		if f.applied {
			return f.kind
		}
		return ""
	}
	d, ok := dev.peers[k]
	if !ok || !d.endpoint.IsValid() {
		return ""
	}
	if !f.applied || f.endpoint != d.endpoint {
		return "roaming"
	}
	return f.kind
}

// endpointKind says where the endpoint ep configured for p came from.
// Runs on the loop.
func (n *Node) endpointKind(p *peerbook.Peer, ep netip.AddrPort) string {
	if o, ok := n.cfg.EndpointOverrides[p.Name]; ok && o == ep {
		return "config"
	}
	if p.Endpoint.IsZero() {
		return "registry"
	}
	if _, literal := n.activeEndpointLocked(p).Addr(); literal {
		return "book"
	}
	return "dns"
}
