package peerbook

import "slices"

// Diff is what changed between two versions of a book. Members are matched
// by public key, the one fact a member cannot change without becoming a
// different WireGuard peer: a renamed member is Changed, a member with a new
// key is Removed and Added.
type Diff struct {
	Added   []Peer       // in the new book's order
	Removed []Peer       // in the old book's order
	Changed []PeerChange // in the new book's order
	// MeshChanged reports a change of any [mesh] setting. Serial and format
	// are not settings and do not count.
	MeshChanged bool
	// RulesChanged reports that the [[rule]] tables differ (in content or
	// order); only their lines moving does not count.
	RulesChanged bool
}

// PeerChange is a member present in both books with different settings.
type PeerChange struct {
	Old, New Peer
}

// Empty reports whether the books configure the same mesh.
func (d Diff) Empty() bool {
	return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0 && !d.MeshChanged && !d.RulesChanged
}

// Compare returns the difference from old to new. Either may be nil, which
// stands for an empty book. It runs in linear time, since it is on the
// reload path of books with thousands of members.
func Compare(old, new *Book) Diff {
	if old == nil {
		old = &Book{}
	}
	if new == nil {
		new = &Book{}
	}
	var d Diff
	d.MeshChanged = !old.Mesh.Equal(&new.Mesh)
	d.RulesChanged = !RulesEqual(old.Rules, new.Rules)

	before := make(map[Key]*Peer, len(old.Peers))
	for i := range old.Peers {
		if _, dup := before[old.Peers[i].PublicKey]; !dup {
			before[old.Peers[i].PublicKey] = &old.Peers[i]
		}
	}
	seen := make(map[Key]bool, len(new.Peers))
	for i := range new.Peers {
		p := &new.Peers[i]
		seen[p.PublicKey] = true
		o, ok := before[p.PublicKey]
		switch {
		case !ok:
			d.Added = append(d.Added, *p)
		case !o.Equal(p):
			d.Changed = append(d.Changed, PeerChange{Old: *o, New: *p})
		}
	}
	for i := range old.Peers {
		if !seen[old.Peers[i].PublicKey] {
			d.Removed = append(d.Removed, old.Peers[i])
		}
	}
	return d
}

// Equal reports whether p and q configure the same member. Line, the
// position in the source file, is ignored: moving a [[peer]] block around
// changes nothing on the wire.
func (p *Peer) Equal(q *Peer) bool {
	return p.Name == q.Name &&
		p.PublicKey == q.PublicKey &&
		slices.Equal(p.Addresses, q.Addresses) &&
		p.Endpoint == q.Endpoint &&
		slices.Equal(p.Endpoints, q.Endpoints) &&
		p.Exit == q.Exit &&
		p.ListenPort == q.ListenPort &&
		slices.Equal(p.Subnets, q.Subnets) &&
		p.Registry == q.Registry &&
		p.Relay == q.Relay &&
		slices.Equal(p.Groups, q.Groups)
}

// Equal reports whether two [mesh] tables hold the same settings.
func (m *Mesh) Equal(n *Mesh) bool {
	return m.Domain == n.Domain &&
		slices.Equal(m.Networks, n.Networks) &&
		m.ListenPort == n.ListenPort &&
		m.MTU == n.MTU &&
		m.PersistentKeepalive == n.PersistentKeepalive &&
		m.NoLANCandidates == n.NoLANCandidates
}
