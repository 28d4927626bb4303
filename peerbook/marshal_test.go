package peerbook

import (
	"net/netip"
	"path/filepath"
	"testing"
)

// sameBook compares everything a book configures, ignoring Line and Source.
func sameBook(a, b *Book) bool {
	if a.Format != b.Format || a.Serial != b.Serial || !a.Mesh.Equal(&b.Mesh) || len(a.Peers) != len(b.Peers) || !RulesEqual(a.Rules, b.Rules) {
		return false
	}
	for i := range a.Peers {
		if !a.Peers[i].Equal(&b.Peers[i]) {
			return false
		}
	}
	return true
}

func TestMarshalRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../testdata/good/*.toml")
	for _, f := range files {
		b := mustParseFile(t, f)
		text := Marshal(b)
		got, err := Parse("marshalled.toml", text)
		if err != nil {
			t.Fatalf("%s: Marshal output does not parse: %v\n%s", f, err, text)
		}
		if !sameBook(b, got) {
			t.Errorf("%s: round trip changed the book:\n%s", f, text)
		}
		if again := Marshal(got); string(again) != string(text) {
			t.Errorf("%s: Marshal is not stable", f)
		}
	}
}

func TestMarshalGolden(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	golden(t, "../testdata/good/design.canonical.golden", Marshal(b))
}

// Keepalive 0 must survive: left out it would come back as the default.
func TestMarshalKeepaliveOff(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	b.Mesh.PersistentKeepalive = 0
	got, err := Parse("x", Marshal(b))
	if err != nil || got.Mesh.PersistentKeepalive != 0 {
		t.Fatalf("keepalive 0 lost: %v", err)
	}
}

// Books built in code may hold anything; Marshal must still emit TOML that
// parses as TOML (Parse then judges the values), never an injected line.
func TestMarshalHostileStrings(t *testing.T) {
	b := bigBook(1)
	b.Peers[0].Name = "x\"\nendpoint = \"1.2.3.4:5\"\n[[peer]]\n\\\x7f\xff"
	b.Mesh.Domain = "\x00"
	b.Peers[0].Endpoint = Endpoint{Host: "h\n", Port: 1}
	b.Peers[0].Subnets = nil
	b.Peers[0].Addresses = append(b.Peers[0].Addresses, netip.MustParseAddr("fe80::1%eth0"))
	_, err := Parse("x", Marshal(b))
	if err == nil {
		t.Fatal("accepted a hostile book")
	}
	for _, p := range err.(*Error).Problems {
		if len(p.Msg) > 12 && p.Msg[:12] == "invalid TOML" || p.Line == 0 {
			t.Errorf("Marshal produced broken TOML: %s\n%s", p, Marshal(b))
		}
	}
}
