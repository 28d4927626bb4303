package peerbook

import (
	"strings"
	"testing"
)

// TestLANCandidatesFlag: lan_candidates defaults to on, false turns it
// off, and Marshal keeps the setting.
func TestLANCandidatesFlag(t *testing.T) {
	const base = "format = 1\nserial = 1\n\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n%s\n[[peer]]\nname = \"home\"\npublic_key = \"MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo=\"\naddresses = [\"10.42.0.2\"]\n"
	for _, c := range []struct {
		line string
		off  bool
	}{{"", false}, {"lan_candidates = true", false}, {"lan_candidates = false", true}} {
		b, err := Parse("book.toml", []byte(strings.Replace(base, "%s", c.line, 1)))
		if err != nil {
			t.Fatalf("%q: %v", c.line, err)
		}
		if b.Mesh.NoLANCandidates != c.off {
			t.Fatalf("%q: NoLANCandidates = %v, want %v", c.line, b.Mesh.NoLANCandidates, c.off)
		}
		out := Marshal(b)
		if strings.Contains(string(out), "lan_candidates = false") != c.off {
			t.Fatalf("%q: Marshal wrote\n%s", c.line, out)
		}
		again, err := Parse("book.toml", out)
		if err != nil || !again.Mesh.Equal(&b.Mesh) {
			t.Fatalf("%q: round trip: %v, mesh %+v want %+v", c.line, err, again.Mesh, b.Mesh)
		}
	}
}
