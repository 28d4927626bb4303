package node

import (
	"slices"
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

// nodeSnapshot is what readers get without n.mu: the status as of the
// last tick or change, and the device read and book it was built from.
// Nothing in it changes once published.
type nodeSnapshot struct {
	status Status
	dev    *deviceState
	book   *peerbook.Book
}

// Status returns a snapshot of the node and every other member. Before Up
// it lists the book's members with no device facts.
//
// A running node answers from the snapshot its tick publishes every
// second (and every applied change publishes at once), without waiting
// for the node's lock: a status asked while a big book is being applied
// shows the state before it. Handshakes, endpoints, byte counters and
// paths are therefore up to one tick (pathTick) old.
func (n *Node) Status() Status {
	if s := n.snap.Load(); s != nil {
		st := s.status
		st.Peers = slices.Clone(s.status.Peers)
		return st
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev != nil {
		// Up is between applying the book and starting the tick.
		dev, _ := n.readDevice()
		return n.statusLocked(dev, time.Now())
	}
	return n.statusLocked(nil, time.Now())
}

// publishStatusLocked builds the status from dev (read now when nil) and
// publishes it for Status. Caller holds n.mu.
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
	n.snap.Store(&nodeSnapshot{status: n.statusLocked(dev, time.Now()), dev: dev, book: n.book})
}

// statusLocked builds the status from dev, or with no device facts when
// dev is nil. Caller holds n.mu.
func (n *Node) statusLocked(dev *deviceState, now time.Time) Status {
	book := n.book
	if book == nil {
		book = n.cfg.Book
	}
	self, _ := book.PeerByKey(n.self)
	s := Status{
		Name:       self.Name,
		PublicKey:  n.self.String(),
		Addresses:  self.Addresses,
		ListenPort: n.listenPort,
		Mode:       string(n.cfg.Mode),
		Interface:  n.ifname,
		BookSerial: book.Serial,
	}
	if len(book.Peers) > 1 {
		s.Peers = make([]PeerStatus, 0, len(book.Peers)-1)
	}
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == n.self {
			continue
		}
		ps := PeerStatus{
			Name:      p.Name,
			PublicKey: p.PublicKey.String(),
			Addresses: p.Addresses,
			Subnets:   p.Subnets,
		}
		if dev != nil {
			if d, ok := dev.peers[p.PublicKey]; ok {
				if d.endpoint.IsValid() {
					ps.Endpoint = d.endpoint.String()
				}
				ps.LastHandshake = d.lastHandshake
				ps.RxBytes, ps.TxBytes = d.rx, d.tx
			}
			ps.EndpointChanges = n.endpointChanges[p.PublicKey]
			// The path is computed now, not taken from the path loop's
			// last round, so it agrees with the handshake shown.
			ps.Path = PathNone
			if via, ok := n.relayVia[p.PublicKey]; ok {
				if r, ok := n.applied[via]; ok {
					ps.Path = PathRelayPrefix + r.name
				}
			} else if direct(dev, p.PublicKey, now) {
				ps.Path = PathDirect
			}
			if st, ok := n.paths[p.PublicKey]; ok {
				ps.PathSince = st.changed
			}
			ps.EndpointSource = n.endpointSource(p, dev)
		}
		s.Peers = append(s.Peers, ps)
	}
	// Peers added behind wgmesh's back (wg set on the UAPI socket) are
	// shown too, so status never hides what the device really does.
	if dev != nil {
		for k, d := range dev.peers {
			if _, ok := book.PeerByKey(k); ok {
				continue
			}
			ps := PeerStatus{PublicKey: k.String(), NotInBook: true, LastHandshake: d.lastHandshake, RxBytes: d.rx, TxBytes: d.tx}
			if d.endpoint.IsValid() {
				ps.Endpoint = d.endpoint.String()
			}
			s.Peers = append(s.Peers, ps)
		}
	}
	return s
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
