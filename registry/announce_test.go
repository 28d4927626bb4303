package registry

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestAnnounceLAN: a member's announcement is published in its TXT record
// (loopback and link-local candidates dropped), is refused for another
// member's key, and an empty one withdraws the candidates.
func TestAnnounceLAN(t *testing.T) {
	owner := func(from netip.Addr) (k peerbook.Key, ok bool) {
		if from == netip.MustParseAddr("127.0.0.1") {
			return alpha.PublicKey, true
		}
		return k, false
	}
	s := &Server{Zone: "mesh.", Members: unitMembers, Owner: owner}
	udp, _ := startServer(t, s)
	ex := DialExchanger{Addr: udp}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	lan := []netip.AddrPort{
		netip.MustParseAddrPort("192.168.1.10:51820"),
		netip.MustParseAddrPort("127.0.0.1:51820"),
		netip.MustParseAddrPort("[fe80::1]:51820"),
		netip.MustParseAddrPort("169.254.3.4:51820"),
		netip.MustParseAddrPort("[fd00:1::10]:51820"),
	}
	if err := Announce(ctx, ex, "mesh", alpha.PublicKey, lan); err != nil {
		t.Fatal(err)
	}
	mb, err := LookupMember(ctx, ex, "mesh", alpha.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{lan[0], lan[4]}
	if !slices.Equal(mb.LAN, want) || mb.Endpoint != alpha.Endpoint || !slices.Equal(mb.AllowedIPs, alpha.AllowedIPs) {
		t.Fatalf("LookupMember = %+v, want LAN %v", mb, want)
	}
	// wgsd clients keep working: Lookup still gives the observed mapping.
	if ep, err := Lookup(ctx, ex, "mesh", alpha.PublicKey); err != nil || ep != alpha.Endpoint {
		t.Fatalf("Lookup = %v, %v", ep, err)
	}

	err = Announce(ctx, ex, "mesh", beta.PublicKey, lan[:1])
	if err == nil || !strings.Contains(err.Error(), "NOTAUTH") {
		t.Fatalf("announcing for another member's key: %v, want NOTAUTH", err)
	}
	if mb, _ := LookupMember(ctx, ex, "mesh", beta.PublicKey); len(mb.LAN) != 0 {
		t.Fatalf("beta has LAN %v after a refused announcement", mb.LAN)
	}

	s.ForgetLAN()
	if mb, _ := LookupMember(ctx, ex, "mesh", alpha.PublicKey); len(mb.LAN) != 0 {
		t.Fatalf("LAN %v after ForgetLAN", mb.LAN)
	}
	if err := Announce(ctx, ex, "mesh", alpha.PublicKey, lan); err != nil {
		t.Fatal(err)
	}
	if err := Announce(ctx, ex, "mesh", alpha.PublicKey, nil); err != nil {
		t.Fatal(err)
	}
	if mb, _ := LookupMember(ctx, ex, "mesh", alpha.PublicKey); len(mb.LAN) != 0 {
		t.Fatalf("LAN %v after withdrawing", mb.LAN)
	}
}

// TestAnnounceRefusedWithoutOwner: a server without Owner takes no
// announcements.
func TestAnnounceRefusedWithoutOwner(t *testing.T) {
	s := &Server{Zone: "mesh.", Members: unitMembers}
	udp, _ := startServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Announce(ctx, DialExchanger{Addr: udp}, "mesh", alpha.PublicKey, []netip.AddrPort{netip.MustParseAddrPort("192.168.1.10:51820")})
	if err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Fatalf("Announce = %v, want REFUSED", err)
	}
}
