package peerbook

// keyIndex finds a member by public key in constant time. Parse builds it;
// a book made another way (a struct literal, a copy whose member list was
// replaced or grown) has none that matches and is scanned instead.
type keyIndex struct {
	// first and n identify the member list the index was built for: a
	// copy of the book that replaced or grew Peers no longer matches.
	first *Peer
	n     int
	at    map[Key]int32
}

// indexKeys builds b's key index. Of two members with the same key (a book
// that failed validation) the first wins, as in the scan.
func (b *Book) indexKeys() {
	if len(b.Peers) == 0 {
		b.keys = nil
		return
	}
	x := &keyIndex{first: &b.Peers[0], n: len(b.Peers), at: make(map[Key]int32, len(b.Peers))}
	for i := range b.Peers {
		if _, dup := x.at[b.Peers[i].PublicKey]; !dup {
			x.at[b.Peers[i].PublicKey] = int32(i)
		}
	}
	b.keys = x
}

// lookup returns the index's answer for k and whether it can be trusted.
// A hit is checked against the member itself, so a key changed in place
// after parsing is never misreported; a miss falls back to the scan for
// the same reason.
func (x *keyIndex) lookup(b *Book, k Key) (*Peer, bool) {
	if x == nil || x.n != len(b.Peers) || x.n == 0 || x.first != &b.Peers[0] {
		return nil, false
	}
	i, ok := x.at[k]
	if !ok || b.Peers[i].PublicKey != k {
		return nil, false
	}
	return &b.Peers[i], true
}
