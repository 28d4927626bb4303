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
	checkRuleInvariants(t, b)
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

// checkRuleInvariants: every accepted rule names existing members, groups
// that some member has and subnets that some member routes, has canonical
// port ranges, and can match some flow between two different members.
func checkRuleInvariants(t testing.TB, b *Book) {
	t.Helper()
	for i := range b.Rules {
		r := &b.Rules[i]
		if len(r.From) == 0 || len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("rule %d has an empty list: %+v", i, r)
		}
		if r.Line <= 0 {
			t.Errorf("rule %d has line %d", i, r.Line)
		}
		members := func(ss []Selector, to bool) map[string]bool {
			out := map[string]bool{}
			for _, s := range ss {
				n := 0
				for j := range b.Peers {
					p := &b.Peers[j]
					hit := false
					switch s.Kind {
					case SelectAll:
						hit = true
					case SelectMember:
						hit = strings.EqualFold(p.Name, s.Name)
					case SelectGroup:
						for _, g := range p.Groups {
							hit = hit || strings.EqualFold(g, s.Name)
						}
					case SelectSubnet:
						if !to {
							t.Errorf("rule %d: subnet selector in from", i)
						}
						for _, n := range p.Subnets {
							hit = hit || (n.Bits() <= s.Subnet.Bits() && n.Contains(s.Subnet.Addr()) && s.Subnet == s.Subnet.Masked())
						}
					}
					if hit {
						out[strings.ToLower(p.Name)] = true
						n++
					}
				}
				if n == 0 {
					t.Errorf("rule %d: %s names no member", i, s)
				}
			}
			return out
		}
		from, to := members(r.From, false), members(r.To, true)
		canMatch := false
		for f := range from {
			for d := range to {
				canMatch = canMatch || f != d
			}
		}
		if !canMatch {
			t.Errorf("rule %d can never match: from %v to %v", i, from, to)
		}
		for _, p := range r.Ports {
			switch p.Proto {
			case ProtoTCP, ProtoUDP:
				if p.Lo == 0 || p.Lo > p.Hi {
					t.Errorf("rule %d: port range %d-%d", i, p.Lo, p.Hi)
				}
			case ProtoAny:
				if len(r.Ports) != 1 {
					t.Errorf("rule %d: any with more ports", i)
				}
			case ProtoICMP:
				if p.Lo != 0 || p.Hi != 0 {
					t.Errorf("rule %d: icmp with ports", i)
				}
			default:
				t.Errorf("rule %d: protocol %d", i, p.Proto)
			}
		}
	}
}
