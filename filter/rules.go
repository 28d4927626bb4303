package filter

import (
	"errors"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Rules are a book's access rules compiled for one member (self): who may
// open which flows towards it and the subnets it routes. A Rules value is
// immutable; a Filter switches between them atomically.
type Rules struct {
	// open is set when the book has no rules: everything passes.
	open bool

	ownAddrs   []netip.Addr   // self's mesh addresses
	ownSubnets []netip.Prefix // the subnets self routes
	meshPorts  []uint16       // TCP and UDP ports never blocked on ownAddrs

	members []member
	// hosts maps a member's mesh address to its index in members.
	hosts map[netip.Addr]int32
	// subnets maps a member's subnet to its index; lengths lists the
	// prefix lengths in use, longest first, per address family.
	subnets            map[netip.Prefix]int32
	lengths4, lengths6 []int

	// networks are the mesh networks: addresses in them, like members'
	// addresses and subnets, are never outside the mesh.
	networks []netip.Prefix
	// exitVia is the member that packets from outside the mesh come
	// from, the exit member self sends such traffic through; -1 if none.
	exitVia int32

	count int // rules in the book
}

// member is one sender as seen from self.
type member struct {
	name string
	key  peerbook.Key
	// all holds what the member may open towards any of self's
	// addresses and subnets; narrowed what it may open towards parts of
	// self's subnets only (to = ["subnet:CIDR"]).
	all      *table
	narrowed []narrowed
	// exit is what the member may open outside the mesh through self,
	// an exit member (to = ["exit:SELF"]).
	exit *table
}

type narrowed struct {
	prefix netip.Prefix
	t      *table
}

// table is what one sender may open: protocols and port spans, merged and
// sorted so that a lookup is a short binary search.
type table struct {
	any      bool
	icmp     bool
	tcp, udp []span
}

type span struct{ lo, hi uint16 }

var emptyTable = &table{}

// DefaultMeshPort is the port of the mesh DNS and the registry on the
// members' mesh addresses, which no rule can close.
const DefaultMeshPort = 53

// ErrNotMember is returned by Compile when self is not in the book.
var ErrNotMember = errors.New("filter: this member is not in the book")

// Compile compiles book's rules for the member with public key self. TCP
// and UDP to port 53 (DefaultMeshPort) and to meshPorts on self's own mesh
// addresses always pass: the mesh DNS and the registry answer there. A book
// without rules compiles to Rules that allow everything.
func Compile(book *peerbook.Book, self peerbook.Key, meshPorts ...uint16) (*Rules, error) {
	return CompileWithExit(book, self, "", meshPorts...)
}

// CompileWithExit is Compile for a member that sends traffic outside the
// mesh through the exit member named exitNode: packets from outside the
// mesh count as coming from that member (its WireGuard peer entry is the
// only one that accepts them), so that replies to the flows self opens
// through it pass. When exitNode is "", not a member or has no
// exit = true, such packets are dropped as from no member.
func CompileWithExit(book *peerbook.Book, self peerbook.Key, exitNode string, meshPorts ...uint16) (*Rules, error) {
	me, ok := book.PeerByKey(self)
	if !ok {
		return nil, ErrNotMember
	}
	r := &Rules{count: len(book.Rules), exitVia: -1}
	if len(book.Rules) == 0 {
		r.open = true
		return r, nil
	}
	r.ownAddrs = slices.Clone(me.Addresses)
	r.ownSubnets = slices.Clone(me.Subnets)
	r.networks = slices.Clone(book.Mesh.Networks)
	r.meshPorts = append([]uint16{DefaultMeshPort}, meshPorts...)
	selfIdx := slices.IndexFunc(book.Peers, func(p peerbook.Peer) bool { return p.PublicKey == self })

	// For every rule, the members it lets in, and whether it opens all of
	// self or only parts of its subnets.
	type grant struct {
		rule   int
		prefix netip.Prefix // invalid: all of self
		exit   bool         // outside the mesh through self
	}
	grants := make([][]grant, len(book.Peers))
	for ri := range book.Rules {
		rule := &book.Rules[ri]
		var parts []netip.Prefix
		whole, exit := false, false
		for _, s := range rule.To {
			if s.Kind == peerbook.SelectExit {
				exit = exit || slices.Contains(book.Members(s), selfIdx)
				continue
			}
			if s.Kind == peerbook.SelectSubnet {
				if slices.ContainsFunc(me.Subnets, func(n netip.Prefix) bool { return n.Bits() <= s.Subnet.Bits() && n.Contains(s.Subnet.Addr()) }) {
					parts = append(parts, s.Subnet)
				}
				continue
			}
			if slices.Contains(book.Members(s), selfIdx) {
				whole = true
			}
		}
		if !whole && !exit && len(parts) == 0 {
			continue
		}
		for _, s := range rule.From {
			for _, i := range book.Members(s) {
				if i == selfIdx {
					continue
				}
				if exit {
					grants[i] = append(grants[i], grant{rule: ri, exit: true})
				}
				if whole {
					grants[i] = append(grants[i], grant{rule: ri})
				} else {
					for _, p := range parts {
						grants[i] = append(grants[i], grant{rule: ri, prefix: p})
					}
				}
			}
		}
	}

	// Members with the same grants share their tables.
	shared := map[string]*table{}
	tableOf := func(rules []int) *table {
		if len(rules) == 0 {
			return emptyTable
		}
		var k strings.Builder
		for _, ri := range rules {
			k.WriteString(strconv.Itoa(ri))
			k.WriteByte(',')
		}
		if t, ok := shared[k.String()]; ok {
			return t
		}
		t := &table{}
		for _, ri := range rules {
			t.add(book.Rules[ri].Ports)
		}
		t.tcp, t.udp = merge(t.tcp), merge(t.udp)
		shared[k.String()] = t
		return t
	}

	r.hosts = make(map[netip.Addr]int32)
	r.subnets = make(map[netip.Prefix]int32)
	for i := range book.Peers {
		if i == selfIdx {
			continue
		}
		p := &book.Peers[i]
		m := member{name: p.Name, key: p.PublicKey}
		var whole, exit []int
		byPrefix := map[netip.Prefix][]int{}
		var order []netip.Prefix
		for _, g := range grants[i] {
			if g.exit {
				exit = append(exit, g.rule)
				continue
			}
			if !g.prefix.IsValid() {
				whole = append(whole, g.rule)
				continue
			}
			if _, seen := byPrefix[g.prefix]; !seen {
				order = append(order, g.prefix)
			}
			byPrefix[g.prefix] = append(byPrefix[g.prefix], g.rule)
		}
		m.all = tableOf(whole)
		m.exit = tableOf(exit)
		for _, pfx := range order {
			m.narrowed = append(m.narrowed, narrowed{prefix: pfx, t: tableOf(byPrefix[pfx])})
		}
		idx := int32(len(r.members))
		r.members = append(r.members, m)
		if exitNode != "" && p.Exit && strings.EqualFold(p.Name, exitNode) {
			r.exitVia = idx
		}
		for _, a := range p.Addresses {
			r.hosts[a] = idx
		}
		for _, s := range p.Subnets {
			r.subnets[s] = idx
			if s.Addr().Is4() {
				r.lengths4 = appendLen(r.lengths4, s.Bits())
			} else {
				r.lengths6 = appendLen(r.lengths6, s.Bits())
			}
		}
	}
	return r, nil
}

func appendLen(ls []int, n int) []int {
	if slices.Contains(ls, n) {
		return ls
	}
	ls = append(ls, n)
	sort.Sort(sort.Reverse(sort.IntSlice(ls)))
	return ls
}

func (t *table) add(ports []peerbook.PortRange) {
	for _, p := range ports {
		switch p.Proto {
		case peerbook.ProtoAny:
			t.any = true
		case peerbook.ProtoICMP:
			t.icmp = true
		case peerbook.ProtoTCP:
			t.tcp = append(t.tcp, span{p.Lo, p.Hi})
		case peerbook.ProtoUDP:
			t.udp = append(t.udp, span{p.Lo, p.Hi})
		}
	}
}

// merge sorts spans and joins those that overlap or touch.
func merge(ss []span) []span {
	if len(ss) == 0 {
		return nil
	}
	slices.SortFunc(ss, func(a, b span) int { return int(a.lo) - int(b.lo) })
	out := ss[:1]
	for _, s := range ss[1:] {
		last := &out[len(out)-1]
		if uint32(s.lo) <= uint32(last.hi)+1 {
			last.hi = max(last.hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// allows reports whether the table opens proto to port (TCP, UDP), or the
// protocol at all (ICMP; or any port, for a fragment: whole says so).
func (t *table) allows(proto uint8, port uint16, whole bool) bool {
	if t.any {
		return true
	}
	var ss []span
	switch proto {
	case protoICMP, protoICMPv6:
		return t.icmp
	case protoTCP:
		ss = t.tcp
	case protoUDP:
		ss = t.udp
	default:
		return false
	}
	if whole {
		return len(ss) == 1 && ss[0].lo == 1 && ss[0].hi == 65535
	}
	// The first span that ends at or after port.
	i, j := 0, len(ss)
	for i < j {
		h := int(uint(i+j) >> 1)
		if ss[h].hi < port {
			i = h + 1
		} else {
			j = h
		}
	}
	return i < len(ss) && ss[i].lo <= port
}

// Open reports whether r allows everything (the book has no rules).
func (r *Rules) Open() bool { return r.open }

// Len is the number of rules in the book r was compiled from.
func (r *Rules) Len() int { return r.count }

// sender returns the index of the member that addr belongs to (one of its
// mesh addresses, or inside one of its subnets; an address outside the
// mesh belongs to the exit member self uses, if any), or -1.
func (r *Rules) sender(addr netip.Addr) int32 {
	if i := r.member(addr); i >= 0 || r.exitVia < 0 || r.inMesh(addr) {
		return i
	}
	return r.exitVia
}

// inMesh reports whether a is inside the mesh networks or belongs to a
// member (other than self; self's own are checked apart).
func (r *Rules) inMesh(a netip.Addr) bool {
	for _, n := range r.networks {
		if n.Contains(a) {
			return true
		}
	}
	return r.member(a) >= 0
}

// member returns the index of the member with address addr or a subnet
// holding it, or -1.
func (r *Rules) member(addr netip.Addr) int32 {
	if i, ok := r.hosts[addr]; ok {
		return i
	}
	lengths := r.lengths4
	if addr.Is6() {
		lengths = r.lengths6
	}
	for _, n := range lengths {
		p, err := addr.Prefix(n)
		if err != nil {
			continue
		}
		if i, ok := r.subnets[p]; ok {
			return i
		}
	}
	return -1
}

func (r *Rules) isOwnAddr(a netip.Addr) bool {
	for _, o := range r.ownAddrs {
		if o == a {
			return true
		}
	}
	return false
}

func (r *Rules) inOwnSubnet(a netip.Addr) bool {
	for _, s := range r.ownSubnets {
		if s.Contains(a) {
			return true
		}
	}
	return false
}

// allowed reports whether member m may open a flow of proto to dst:port
// (a fragment: to every port of proto).
func (r *Rules) allowed(m int32, dst netip.Addr, proto uint8, port uint16, fragment bool) bool {
	mem := &r.members[m]
	own := r.isOwnAddr(dst)
	if !own && !r.inOwnSubnet(dst) {
		// Outside the mesh: only through self as an exit, which the
		// compiled exit tables say (they are empty unless self is one).
		return mem.exit != emptyTable && !r.inMesh(dst) && mem.exit.allows(proto, port, fragment)
	}
	if mem.all.allows(proto, port, fragment) {
		return true
	}
	if own {
		return false
	}
	for i := range mem.narrowed {
		n := &mem.narrowed[i]
		if n.prefix.Contains(dst) && n.t.allows(proto, port, fragment) {
			return true
		}
	}
	return false
}

func (r *Rules) meshPort(port uint16) bool {
	for _, p := range r.meshPorts {
		if p == port {
			return true
		}
	}
	return false
}
