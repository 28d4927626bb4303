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
	for _, s := range subnets {
		if _, ok := overlapsMulticast(s); ok || s.Contains(broadcast4) {
			t.Errorf("subnet %s routes multicast or broadcast", s)
		}
		for i := range b.Peers {
			if ap, ok := b.Peers[i].Endpoint.Addr(); ok && !ap.Addr().IsLoopback() && s.Contains(ap.Addr()) {
				t.Errorf("subnet %s contains the endpoint of %q", s, b.Peers[i].Name)
			}
		}
	}
	// No set of subnets adds up to a default route, by a model other than
	// the validator's sweep: split the space until each piece is inside a
	// subnet or outside all of them.
	if coveredBy(netip.MustParsePrefix("0.0.0.0/0"), subnets) || coveredBy(netip.MustParsePrefix("::/0"), subnets) {
		t.Errorf("subnets %v cover a whole address family", subnets)
	}
}

func coveredBy(p netip.Prefix, subnets []netip.Prefix) bool {
	touched := false
	for _, s := range subnets {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
		touched = touched || s.Overlaps(p)
	}
	if !touched || p.Bits() == p.Addr().BitLen() {
		return false
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hi := netip.PrefixFrom(lastAddr(p), p.Bits()+1).Masked()
	return coveredBy(lo, subnets) && coveredBy(hi, subnets)
}
