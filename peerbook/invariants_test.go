package peerbook

import (
	"net/netip"
	"strings"
	"testing"
)

// checkInvariants asserts what every accepted book guarantees its users.
func checkInvariants(t testing.TB, b *Book) {
	t.Helper()
	if b.Format != CurrentFormat {
		t.Errorf("format %d", b.Format)
	}
	if !validDomain(b.Mesh.Domain) || len(b.Mesh.Networks) == 0 || b.Mesh.ListenPort == 0 || b.Mesh.MTU < 576 {
		t.Errorf("bad mesh %+v", b.Mesh)
	}
	for _, n := range b.Mesh.Networks {
		if n != n.Masked() || n.Bits() == 0 {
			t.Errorf("network %s", n)
		}
	}
	if len(overlaps(b.Mesh.Networks)) > 0 {
		t.Errorf("overlapping networks %v", b.Mesh.Networks)
	}
	if len(b.Peers) == 0 {
		t.Error("no peers")
	}
	names := map[string]bool{}
	keys := map[Key]bool{}
	addrs := map[netip.Addr]bool{}
	var subnets []netip.Prefix
	for i := range b.Peers {
		p := &b.Peers[i]
		if !validLabel(p.Name) || names[strings.ToLower(p.Name)] || strings.EqualFold(p.Name, b.Mesh.Domain) {
			t.Errorf("name %q", p.Name)
		}
		names[strings.ToLower(p.Name)] = true
		if p.PublicKey.IsZero() || keys[p.PublicKey] {
			t.Errorf("key %s", p.PublicKey)
		}
		keys[p.PublicKey] = true
		if len(p.Addresses) == 0 {
			t.Errorf("peer %q has no address", p.Name)
		}
		for _, a := range p.Addresses {
			if _, ok := b.NetworkOf(a); !ok || addrs[a] {
				t.Errorf("address %s", a)
			}
			addrs[a] = true
		}
		for _, s := range p.Subnets {
			if s != s.Masked() || s.Bits() == 0 {
				t.Errorf("subnet %s", s)
			}
			for _, n := range b.Mesh.Networks {
				if n.Overlaps(s) {
					t.Errorf("subnet %s overlaps %s", s, n)
				}
			}
		}
		subnets = append(subnets, p.Subnets...)
		if !p.Endpoint.IsZero() {
			if _, err := ParseEndpoint(p.Endpoint.String()); err != nil {
				t.Errorf("endpoint: %v", err)
			}
		}
		if p.Line <= 0 {
			t.Errorf("peer %q has line %d", p.Name, p.Line)
		}
	}
	if len(overlaps(subnets)) > 0 {
		t.Errorf("overlapping subnets %v", subnets)
	}
}
