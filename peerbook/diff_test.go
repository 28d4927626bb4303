package peerbook

import (
	"net/netip"
	"testing"
	"time"
)

func TestCompare(t *testing.T) {
	old := mustParseFile(t, "../testdata/good/design.toml")
	same := mustParseFile(t, "../testdata/good/design.toml")
	for i := range same.Peers {
		same.Peers[i].Line += 100 // moved in the file: not a change
	}
	same.Serial++
	if d := Compare(old, same); !d.Empty() {
		t.Errorf("moving members and bumping the serial is a change: %+v", d)
	}

	nu := mustParseFile(t, "../testdata/good/design.toml")
	nu.Peers[0].Name = "amazon"                                       // renamed: Changed
	nu.Peers[1].PublicKey[0] ^= 1                                     // new key: Removed + Added
	nu.Peers = append(nu.Peers, Peer{Name: "new", PublicKey: Key{9}}) // Added
	d := Compare(old, nu)
	if d.MeshChanged {
		t.Error("MeshChanged without a mesh change")
	}
	if len(d.Changed) != 1 || d.Changed[0].Old.Name != "aws" || d.Changed[0].New.Name != "amazon" {
		t.Errorf("Changed = %+v", d.Changed)
	}
	if len(d.Removed) != 1 || d.Removed[0].Name != "home" {
		t.Errorf("Removed = %+v", d.Removed)
	}
	if len(d.Added) != 2 || d.Added[0].Name != "home" || d.Added[1].Name != "new" {
		t.Errorf("Added = %+v", d.Added)
	}
	if d.Empty() {
		t.Error("Empty() on a non-empty diff")
	}

	m := mustParseFile(t, "../testdata/good/design.toml")
	m.Mesh.MTU = 1380
	if d := Compare(old, m); !d.MeshChanged || d.Empty() || len(d.Changed) != 0 {
		t.Errorf("mtu change: %+v", d)
	}

	if d := Compare(nil, old); len(d.Added) != 2 || !d.MeshChanged {
		t.Errorf("from nil: %+v", d)
	}
	if d := Compare(old, nil); len(d.Removed) != 2 {
		t.Errorf("to nil: %+v", d)
	}
}

func TestPeerEqual(t *testing.T) {
	base := Peer{Name: "a", PublicKey: Key{1}, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Line: 3}
	variants := []func(p *Peer){
		func(p *Peer) { p.Name = "A" },
		func(p *Peer) { p.PublicKey = Key{2} },
		func(p *Peer) { p.Addresses = append(p.Addresses, netip.MustParseAddr("10.0.0.2")) },
		func(p *Peer) { p.Endpoint = Endpoint{Host: "x", Port: 1} },
		func(p *Peer) { p.ListenPort = 1 },
		func(p *Peer) { p.Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")} },
		func(p *Peer) { p.Registry = true },
		func(p *Peer) { p.Relay = true },
	}
	for i, f := range variants {
		q := base
		q.Addresses = append([]netip.Addr(nil), base.Addresses...)
		f(&q)
		if base.Equal(&q) || q.Equal(&base) {
			t.Errorf("variant %d compares equal", i)
		}
	}
	q := base
	q.Line = 99
	q.Subnets = []netip.Prefix{} // empty and nil mean the same
	if !base.Equal(&q) {
		t.Error("Line or empty subnets make peers differ")
	}
}

func TestCompareTenThousand(t *testing.T) {
	a, b := bigBook(10000), bigBook(10000)
	b.Peers[5000].Endpoint.Port = 1
	b.Peers = b.Peers[1:]
	start := time.Now()
	d := Compare(a, b)
	if time.Since(start) > time.Second {
		t.Errorf("Compare of 10000 members took %v", time.Since(start))
	}
	if len(d.Changed) != 1 || len(d.Removed) != 1 || len(d.Added) != 0 {
		t.Errorf("diff: %d changed, %d removed, %d added", len(d.Changed), len(d.Removed), len(d.Added))
	}
}

func BenchmarkCompare10000(b *testing.B) {
	x, y := bigBook(10000), bigBook(10000)
	for b.Loop() {
		Compare(x, y)
	}
}
