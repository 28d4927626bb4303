package node

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestOnLink: only candidates on one of this host's networks, and not
// this host's own addresses, are kept.
func TestOnLink(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("192.168.60.2/24"), netip.MustParsePrefix("fd00:60::2/64")}
	cands := []netip.AddrPort{
		netip.MustParseAddrPort("192.168.60.3:51820"),
		netip.MustParseAddrPort("192.168.60.2:51820"), // this host
		netip.MustParseAddrPort("192.168.20.2:51820"), // another network
		netip.MustParseAddrPort("[fd00:60::3]:51820"),
	}
	got := onLink(cands, local)
	want := []netip.AddrPort{cands[0], cands[3]}
	if !slices.Equal(got, want) {
		t.Fatalf("onLink = %v, want %v", got, want)
	}
}

// TestLocalCandidates: this host's announcement never holds loopback,
// link-local or mesh addresses, and carries the listen port.
func TestLocalCandidates(t *testing.T) {
	mesh := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	for _, c := range localCandidates(51820, "", mesh) {
		a := c.Addr()
		if c.Port() != 51820 || a.IsLoopback() || a.IsLinkLocalUnicast() || mesh[0].Contains(a) {
			t.Errorf("announced %v", c)
		}
	}
}

// TestLANRotation: LAN candidates first, one per lanWait, then the public
// mapping, then the first candidate again; off when the book says so.
func TestLANRotation(t *testing.T) {
	n := &Node{book: &peerbook.Book{}}
	k := peerbook.Key{1}
	pub := netip.MustParseAddrPort("198.18.100.2:40000")
	c1, c2 := netip.MustParseAddrPort("192.168.60.3:51820"), netip.MustParseAddrPort("192.168.61.3:51820")
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at   time.Duration
		want netip.AddrPort
		lan  bool
	}{
		{0, c1, true}, {2 * time.Second, c1, true}, {lanWait, c2, true},
		{2 * lanWait, pub, false}, {2*lanWait + time.Second, pub, false}, {3 * lanWait, c1, true},
	}
	for _, s := range steps {
		got, lan := n.lanTargetLocked(k, []netip.AddrPort{c1, c2}, pub, t0.Add(s.at))
		if got != s.want || lan != s.lan {
			t.Fatalf("at %v: %v %v, want %v %v", s.at, got, lan, s.want, s.lan)
		}
	}
	n.book.Mesh.NoLANCandidates = true
	if got, lan := n.lanTargetLocked(k, []netip.AddrPort{c1, c2}, pub, t0); got != pub || lan {
		t.Fatalf("with lan_candidates = false: %v %v, want the public mapping", got, lan)
	}
}
