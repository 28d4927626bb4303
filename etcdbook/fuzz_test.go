package etcdbook

import (
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// FuzzAssemble: whatever a member record holds, Assemble does not panic;
// a book it accepts has the member of that record's key and nothing from
// the record beyond its [[peer]] table, and its records, written back
// canonically, give the same book.
func FuzzAssemble(f *testing.F) {
	base := Records{
		MeshKey:             []byte("[mesh]\nnetworks = [\"10.42.0.0/16\"]\npersistent_keepalive = 25\n"),
		MemberKey("a"):      []byte("[[peer]]\nname = \"a\"\npublic_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\naddresses = [\"10.42.0.1\"]\n"),
		MemberKey("target"): nil,
	}
	f.Add([]byte("[[peer]]\nname = \"target\"\npublic_key = \"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\"\naddresses = [\"10.42.0.2\"]\n"))
	f.Add([]byte("[[peer]]\nname = \"target\"\npublic_key = \"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\"\naddresses = [\"10.42.0.2\"]\n[mesh]\nmtu = 9000\n"))
	f.Add([]byte("serial = 9\n[[peer]]\nname = \"target\"\n"))
	f.Add([]byte("[[peer]]\nname = \"target\"\npublic_key = \"\"\"\n"))
	f.Add([]byte("[[peer]]\nname = \"target\"\n[[peer]]\nname = \"x\"\n"))
	f.Fuzz(func(t *testing.T, v []byte) {
		r := Records{}
		for k, x := range base {
			r[k] = x
		}
		r[MemberKey("target")] = v
		b, _, err := Assemble("fuzz", Head{Serial: 3, Digest: r.Digest()}, r)
		if err != nil {
			return
		}
		if len(b.Peers) != 2 || b.Serial != 3 || b.Mesh.MTU != peerbook.DefaultMTU {
			t.Fatalf("record %q changed more than its member: %d members, serial %d, mtu %d", v, len(b.Peers), b.Serial, b.Mesh.MTU)
		}
		if _, ok := b.PeerByName("target"); !ok {
			t.Fatalf("record %q accepted without its member", v)
		}
		again := FromBook(b)
		b2, _, err := Assemble("fuzz", Head{Serial: 3, Digest: again.Digest()}, again)
		if err != nil {
			t.Fatalf("canonical records of an accepted book refused: %v", err)
		}
		p, _ := b.PeerByName("target")
		q, _ := b2.PeerByName("target")
		if !p.Equal(q) {
			t.Fatalf("canonical records give another member: %+v vs %+v", p, q)
		}
	})
}
