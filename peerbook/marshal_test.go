package peerbook

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strconv"
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

// The fragments joined as Marshal joins its parts give Marshal's text.
func TestFragmentsJoinToMarshal(t *testing.T) {
	for _, f := range []string{"design.toml", "rules.toml"} {
		b, err := Load(filepath.Join("..", "testdata", "good", f))
		if err != nil {
			t.Fatal(err)
		}
		var w bytes.Buffer
		w.WriteString("format = 1\nserial = " + strconv.FormatUint(b.Serial, 10) + "\n\n")
		w.Write(MarshalMesh(b))
		for i := range b.Peers {
			w.WriteString("\n")
			w.Write(MarshalPeer(&b.Peers[i]))
		}
		if r := MarshalRules(b.Rules); r != nil {
			w.WriteString("\n")
			w.Write(r)
		} else if len(b.Rules) > 0 {
			t.Fatalf("%s: no rules fragment", f)
		}
		if got, want := w.String(), string(Marshal(b)); got != want {
			t.Fatalf("%s: fragments give\n%s\nMarshal gives\n%s", f, got, want)
		}
	}
}
