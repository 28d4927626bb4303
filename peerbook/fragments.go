package peerbook

import (
	"bytes"
)

// Fragments of the canonical text, for stores that keep a book as one
// record per part (the mesh settings, each member, the rules) and
// assemble the text to Parse from them. Each fragment is exactly what
// Marshal writes for that part, without the blank line before it.

// MarshalMesh returns the canonical [mesh] table of b.
func MarshalMesh(b *Book) []byte {
	t := Marshal(&Book{Mesh: b.Mesh})
	return bytes.Clone(t[bytes.Index(t, []byte("[mesh]\n")):])
}

// MarshalPeer returns the canonical [[peer]] table of p.
func MarshalPeer(p *Peer) []byte { return marshalPeer(p) }

// MarshalRules returns the canonical [[rule]] tables of rs; nil when rs is
// empty.
func MarshalRules(rs []Rule) []byte {
	if len(rs) == 0 {
		return nil
	}
	var w bytes.Buffer
	marshalRules(&w, rs)
	return w.Bytes()[1:]
}

// WithoutLineRefs drops the " (line N)" references to other parts of the
// text from a problem's message, for books assembled from fragments whose
// lines would mislead.
func WithoutLineRefs(msg string) string { return stripLineRefs(msg) }
