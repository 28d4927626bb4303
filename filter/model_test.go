package filter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestAgainstModel compares the compiled rules with a direct reading of
// the book, rule by rule, on random books and packets: the sender found by
// its addresses and subnets, the rules that name it in from and self (or a
// subnet of self's containing the destination) in to, and the union of
// their ports, as a bitmap. No conntrack: every packet is a new flow.
func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	books, packets := 0, 0
	seen := map[Verdict]int{}
	for books < 300 {
		text := randomBook(rng)
		b, err := peerbook.Parse("book.toml", []byte(text))
		if err != nil {
			continue // a random rule that can never match, say
		}
		books++
		for self := range b.Peers {
			r, err := Compile(b, b.Peers[self].PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			f := New(r, Options{})
			for range 60 {
				p := randomPacket(rng, b, self)
				want, wantPeer := model(b, self, p)
				got, peer := f.Inbound(p.bytes())
				packets++
				seen[got]++
				if got != want || peer != wantPeer {
					t.Fatalf("self %s, packet %+v: %v from %q, model %v from %q\n%s", b.Peers[self].Name, p, got, peer, want, wantPeer, text)
				}
			}
		}
	}
	t.Logf("%d books, %d packets: %v", books, packets, seen)
	for _, v := range []Verdict{AcceptRule, AcceptMeshService, DropNoRule, DropNotMember, DropFragment} {
		if seen[v] < 100 {
			t.Errorf("only %d packets got %v: the generator misses a case", seen[v], v)
		}
	}
}

var modelPorts = []uint16{1, 22, 53, 79, 80, 81, 443, 1000, 1999, 2000, 2001, 65534, 65535}

func randomBook(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString("format = 1\n[mesh]\nnetworks = [\"10.42.0.0/16\", \"fd42::/64\"]\n")
	n := 2 + rng.IntN(4)
	for i := range n {
		fmt.Fprintf(&b, "\n[[peer]]\nname = \"m%d\"\npublic_key = %q\naddresses = [\"10.42.0.%d\", \"fd42::%d\"]\n", i, key(i+1), i+1, i+1)
		if rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "subnets = [\"192.168.%d.0/24\"]\n", i)
		}
		var gs []string
		for _, g := range []string{"a", "b", "c"} {
			if rng.IntN(3) == 0 {
				gs = append(gs, `"`+g+`"`)
			}
		}
		if len(gs) > 0 {
			fmt.Fprintf(&b, "groups = [%s]\n", strings.Join(gs, ", "))
		}
	}
	sel := func(to bool) string {
		switch k := rng.IntN(10); {
		case k == 0:
			return `"*"`
		case k < 4:
			return fmt.Sprintf(`"group:%c"`, 'a'+rng.IntN(3))
		case k < 6 && to:
			return fmt.Sprintf(`"subnet:192.168.%d.%d/25"`, rng.IntN(n), 128*rng.IntN(2))
		}
		return fmt.Sprintf(`"m%d"`, rng.IntN(n))
	}
	for range 1 + rng.IntN(6) {
		var from, to, ports []string
		for range 1 + rng.IntN(2) {
			from = append(from, sel(false))
		}
		for range 1 + rng.IntN(2) {
			to = append(to, sel(true))
		}
		switch rng.IntN(8) {
		case 0:
			ports = []string{`"any"`}
		default:
			for range 1 + rng.IntN(3) {
				switch rng.IntN(5) {
				case 0:
					ports = append(ports, `"icmp"`)
				case 1:
					ports = append(ports, fmt.Sprintf(`"udp:%d"`, modelPorts[rng.IntN(len(modelPorts))]))
				case 2:
					lo := modelPorts[rng.IntN(len(modelPorts))]
					hi := modelPorts[rng.IntN(len(modelPorts))]
					if lo > hi {
						lo, hi = hi, lo
					}
					ports = append(ports, fmt.Sprintf(`"tcp:%d-%d"`, lo, hi))
				default:
					ports = append(ports, fmt.Sprintf(`"tcp:%d"`, modelPorts[rng.IntN(len(modelPorts))]))
				}
			}
		}
		fmt.Fprintf(&b, "\n[[rule]]\nfrom = [%s]\nto = [%s]\nports = [%s]\n", strings.Join(from, ", "), strings.Join(to, ", "), strings.Join(ports, ", "))
	}
	return b.String()
}

func randomPacket(rng *rand.Rand, b *peerbook.Book, self int) pk {
	addr := func(toSelf bool) string {
		i := rng.IntN(len(b.Peers) + 1)
		if toSelf && rng.IntN(4) > 0 {
			i = self
		}
		if i == len(b.Peers) {
			return "10.42.9.9" // no member's
		}
		p := &b.Peers[i]
		if len(p.Subnets) > 0 && rng.IntN(3) == 0 {
			return fmt.Sprintf("192.168.%d.%d", p.Subnets[0].Addr().As4()[2], 1+rng.IntN(254))
		}
		return p.Addresses[0].String()
	}
	p := pk{src: addr(false), dst: addr(true), sport: 40000, dport: modelPorts[rng.IntN(len(modelPorts))]}
	switch rng.IntN(5) {
	case 0:
		p.proto = protoUDP
	case 1:
		p.proto, p.icmpType = protoICMP, 8
	case 2:
		p.proto = 47
	default:
		p.proto, p.flags = protoTCP, tcpSYN
	}
	if rng.IntN(8) == 0 {
		p.fragOff = 100
	}
	return p
}

// model judges one new inbound flow directly from the book.
func model(b *peerbook.Book, self int, p pk) (Verdict, string) {
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	me := &b.Peers[self]
	sender := -1
	for i := range b.Peers {
		q := &b.Peers[i]
		if i != self && (slices.Contains(q.Addresses, src) || slices.ContainsFunc(q.Subnets, func(s netip.Prefix) bool { return s.Contains(src) })) {
			sender = i
		}
	}
	if sender < 0 {
		return DropNotMember, ""
	}
	name := b.Peers[sender].Name
	own := slices.Contains(me.Addresses, dst)
	inSubnet := slices.ContainsFunc(me.Subnets, func(s netip.Prefix) bool { return s.Contains(dst) })
	if p.fragOff == 0 && (p.proto == protoTCP || p.proto == protoUDP) && p.dport == 53 && own {
		return AcceptMeshService, name
	}
	var any, icmp bool
	var tcpPorts, udpPorts [65536]bool
	for _, r := range b.Rules {
		if !slices.ContainsFunc(r.From, func(s peerbook.Selector) bool { return slices.Contains(b.Members(s), sender) }) {
			continue
		}
		applies := false
		for _, s := range r.To {
			if s.Kind == peerbook.SelectSubnet {
				applies = applies || (inSubnet && s.Subnet.Contains(dst))
			} else {
				applies = applies || (slices.Contains(b.Members(s), self) && (own || inSubnet))
			}
		}
		if !applies {
			continue
		}
		for _, pr := range r.Ports {
			switch pr.Proto {
			case peerbook.ProtoAny:
				any = true
			case peerbook.ProtoICMP:
				icmp = true
			case peerbook.ProtoTCP:
				for x := int(pr.Lo); x <= int(pr.Hi); x++ {
					tcpPorts[x] = true
				}
			case peerbook.ProtoUDP:
				for x := int(pr.Lo); x <= int(pr.Hi); x++ {
					udpPorts[x] = true
				}
			}
		}
	}
	allowed := any
	if !allowed {
		var ports *[65536]bool
		switch p.proto {
		case protoTCP:
			ports = &tcpPorts
		case protoUDP:
			ports = &udpPorts
		case protoICMP:
			allowed = icmp
		}
		if ports != nil {
			if p.fragOff != 0 {
				allowed = !slices.Contains(ports[1:], false)
			} else {
				allowed = ports[p.dport]
			}
		}
	}
	switch {
	case allowed:
		return AcceptRule, name
	case p.fragOff != 0:
		return DropFragment, name
	}
	return DropNoRule, name
}
