package peerbook

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

var (
	topKeys  = []string{"format", "serial", "mesh", "peer", "rule"}
	meshKeys = []string{"domain", "networks", "listen_port", "mtu", "persistent_keepalive", "lan_candidates"}
	peerKeys = []string{"name", "public_key", "addresses", "endpoint", "endpoints", "listen_port", "subnets", "registry", "relay", "groups", "exit"}
)

// book turns a decoded document into a Book, recording every problem.
func (c *checker) book(doc map[string]any) *Book {
	b := &Book{Format: CurrentFormat, Source: c.file}
	c.unknownKeys("", "", doc, topKeys)
	c.format(doc)
	if v, ok := doc["serial"]; ok {
		switch n, isInt := v.(int64); {
		case !isInt:
			c.add("serial", "serial must be an integer (0 or more), not %s", typeName(v))
		case n < 0:
			c.add("serial", "serial must be 0 or more, got %d", n)
		default:
			b.Serial = uint64(n)
		}
	}
	c.mesh(doc, &b.Mesh)
	c.peers(doc, b)
	c.rules(doc, b)
	return b
}

func (c *checker) format(doc map[string]any) {
	v, ok := doc["format"]
	if !ok {
		c.addLine(0, "format is missing; start the book with the line: format = %d", CurrentFormat)
		return
	}
	n, ok := v.(int64)
	switch {
	case !ok:
		c.add("format", "format must be the integer %d, not %s", CurrentFormat, typeName(v))
	case n > CurrentFormat:
		c.add("format", "format %d is newer than this wgmesh understands (format %d); upgrade wgmesh to read this book", n, CurrentFormat)
	case n != CurrentFormat:
		c.add("format", "format %d does not exist; write format = %d", n, CurrentFormat)
	}
}

func (c *checker) mesh(doc map[string]any, m *Mesh) {
	m.Domain = DefaultDomain
	m.ListenPort = DefaultListenPort
	m.MTU = DefaultMTU
	m.PersistentKeepalive = DefaultKeepalive

	v, ok := doc["mesh"]
	if !ok {
		c.addLine(0, "[mesh] is missing; every book needs one, with at least networks = [\"10.42.0.0/16\"]")
		return
	}
	t, ok := v.(map[string]any)
	if !ok {
		c.add("mesh", "mesh must be a table ([mesh]), not %s", typeName(v))
		return
	}
	c.unknownKeys("mesh", "", t, meshKeys)

	if v, ok := t["domain"]; ok {
		if s, ok := c.str("mesh.domain", "mesh.domain", v, `"mesh"`); ok {
			if validDomain(s) {
				m.Domain = s
			} else {
				c.add("mesh.domain", "mesh.domain %q is not a DNS name; use dot-separated labels of letters, digits and hyphens, e.g. \"mesh\" or \"corp.internal\"", s)
			}
		}
	}

	m.Networks = c.networks(t)

	if v, ok := t["listen_port"]; ok {
		if n, ok := c.integer("mesh.listen_port", "mesh.listen_port", v, 1, 65535); ok {
			m.ListenPort = uint16(n)
		}
	}

	if v, ok := t["mtu"]; ok {
		lo, why := int64(576), "the IPv4 minimum"
		for _, n := range m.Networks {
			if n.Addr().Is6() {
				lo, why = 1280, "the IPv6 minimum, and the mesh has IPv6 networks"
			}
		}
		if n, ok := v.(int64); ok && n < lo {
			c.add("mesh.mtu", "mesh.mtu %d is too small: it must be at least %d (%s); the usual value is %d", n, lo, why, DefaultMTU)
		} else if n, ok := c.integer("mesh.mtu", "mesh.mtu", v, lo, 65535); ok {
			m.MTU = int(n)
		}
	}

	if v, ok := t["persistent_keepalive"]; ok {
		if n, ok := c.integer("mesh.persistent_keepalive", "mesh.persistent_keepalive", v, 0, 65535); ok {
			m.PersistentKeepalive = uint16(n)
		}
	}

	if v, ok := t["lan_candidates"]; ok {
		if on, ok := c.boolean("mesh.lan_candidates", "mesh.lan_candidates", v); ok {
			m.NoLANCandidates = !on
		}
	}
}

func (c *checker) networks(t map[string]any) []netip.Prefix {
	v, ok := t["networks"]
	if !ok {
		c.add("mesh", "mesh.networks is missing; list the mesh address ranges, e.g. networks = [\"10.42.0.0/16\", \"fd42:42::/64\"]")
		return nil
	}
	vals, paths, ok := c.strList("mesh.networks", "mesh.networks", v, `"10.42.0.0/16"`)
	if !ok {
		return nil
	}
	if len(v.([]any)) == 0 {
		c.add("mesh.networks", "mesh.networks is empty; list at least one range, e.g. [\"10.42.0.0/16\"]")
		return nil
	}
	var nets []netip.Prefix
	var netPaths []string
	for i, s := range vals {
		p, err := parseCanonicalPrefix(s)
		if err != nil {
			c.add(paths[i], "mesh network %v", err)
			// Judge addresses against the intended network anyway, so that
			// one typo in networks does not also flag every member.
			if q, perr := netip.ParsePrefix(s); perr == nil && q.Bits() > 0 && !q.Addr().Is4In6() {
				nets = append(nets, q.Masked())
				netPaths = append(netPaths, paths[i])
			}
			continue
		}
		if p.Bits() == 0 {
			c.add(paths[i], "mesh network %q covers every address; use a private range such as \"10.42.0.0/16\" or \"fd42:42::/64\"", s)
			continue
		}
		nets = append(nets, p)
		netPaths = append(netPaths, paths[i])
	}
	for _, pr := range overlaps(nets) {
		a, b := pr[0], pr[1]
		if c.lines.line(netPaths[a]) > c.lines.line(netPaths[b]) {
			a, b = b, a
		}
		if nets[a] == nets[b] {
			c.add(netPaths[b], "mesh network %s is listed twice; list it once", nets[b])
			continue
		}
		c.add(netPaths[b], "mesh networks %s and %s overlap; list each range once", nets[a], nets[b])
	}
	return nets
}

// parseCanonicalPrefix parses a network in its canonical form. The error
// quotes s and says what the canonical spelling would be.
func parseCanonicalPrefix(s string) (netip.Prefix, error) {
	if r, ok := controlChar(s); ok {
		return netip.Prefix{}, fmt.Errorf("%q contains control character %U", s, r)
	}
	if !strings.Contains(s, "/") {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			bits := 24
			if a.Is6() {
				bits = 64
			}
			return netip.Prefix{}, fmt.Errorf("%q is an address, not a network; add a prefix length, e.g. %q", s, netip.PrefixFrom(a, bits).Masked().String())
		}
		return netip.Prefix{}, fmt.Errorf("%q is not an IP network like \"192.168.1.0/24\"", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP network like \"192.168.1.0/24\"", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 network; write it in IPv4 form", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q is not canonical: it has host bits set; write %q", s, m.String())
	}
	return p, nil
}

// peerState is what the cross-member checks need to know about one member.
type peerState struct {
	label string // `peer "home"` or `peer #3` when the name is unusable
	path  string // "peer[2]"
}

func (c *checker) peers(doc map[string]any, b *Book) {
	v, ok := doc["peer"]
	if !ok {
		c.addLine(0, "the book has no members; add a [[peer]] table for each machine")
		return
	}
	arr, ok := v.([]any)
	if !ok {
		c.add("peer", "peer must be an array of tables written as [[peer]], not %s", typeName(v))
		return
	}
	if len(arr) == 0 {
		c.add("peer", "the book has no members; add a [[peer]] table for each machine")
		return
	}

	x := &crossCheck{
		names: make(map[string]int, len(arr)),
		keys:  make(map[Key]int, len(arr)),
		addrs: make(map[netip.Addr]int, len(arr)),
	}
	for i, e := range arr {
		path := "peer[" + strconv.Itoa(i) + "]"
		t, ok := e.(map[string]any)
		if !ok {
			c.add(path, "peer #%d must be a table, not %s", i+1, typeName(e))
			continue
		}
		p := c.peer(i, path, t, b, x)
		p.Line = c.lines.line(path)
		b.Peers = append(b.Peers, p)
	}
	c.subnetOverlaps(x)
	c.endpointsInSubnets(x)
	c.subnetsCoverAll(x, 4)
	c.subnetsCoverAll(x, 6)
}

// crossCheck gathers what must be unique across members.
type crossCheck struct {
	states []peerState
	names  map[string]int     // lower-case name -> index into states
	keys   map[Key]int        // -> index into states
	addrs  map[netip.Addr]int // -> index into states
	// every subnet claim, for the overlap sweep
	subnets     []netip.Prefix
	subnetPaths []string
	subnetOwner []int
	// every subnet that parsed, refused or not, for the whole-space check
	claimed []subnetClaim
	// literal IP endpoints, for the check that no subnet captures one
	endpoints []subnetClaim
}

// subnetClaim is one prefix (or endpoint address, as a host prefix) with
// where it was written and which member wrote it.
type subnetClaim struct {
	prefix netip.Prefix
	path   string
	owner  int
}

func (c *checker) other(x *crossCheck, i int) string {
	st := x.states[i]
	return fmt.Sprintf("%s (line %d)", st.label, c.lines.line(st.path))
}

// peer checks one member. i is its position among the [[peer]] tables.
func (c *checker) peer(i int, path string, t map[string]any, b *Book, x *crossCheck) Peer {
	var p Peer
	self := len(x.states)
	st := peerState{label: "peer #" + strconv.Itoa(i+1), path: path}

	// The name comes first so that every other message can use it.
	if v, ok := t["name"]; !ok {
		c.add(path, "%s: name is missing; add name = \"...\", a DNS label such as \"home\"", st.label)
	} else if s, ok := c.str(path+".name", st.label+": name", v, `"home"`); ok {
		switch {
		case !validLabel(s):
			why := "use 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen"
			if r, bad := controlChar(s); bad {
				why = fmt.Sprintf("it contains control character %U; %s", r, why)
			}
			c.add(path+".name", "%s: name %q is not a DNS label; %s", st.label, s, why)
		default:
			p.Name = s
			st.label = fmt.Sprintf("peer %q", s)
			lower := strings.ToLower(s)
			if j, dup := x.names[lower]; dup {
				c.add(path+".name", "%s: name repeats %s; names are compared ignoring case and must be unique", st.label, c.other(x, j))
			} else {
				x.names[lower] = self
			}
			if strings.EqualFold(s, b.Mesh.Domain) {
				c.add(path+".name", "%s: name equals the mesh domain %q, so %q would be ambiguous; pick another name", st.label, b.Mesh.Domain, s+"."+b.Mesh.Domain)
			}
		}
	}
	// Registered before the other checks so that messages about this
	// member's conflicts can already name it.
	x.states = append(x.states, st)
	c.unknownKeys(path, st.label+": ", t, peerKeys)

	if v, ok := t["public_key"]; !ok {
		c.add(path, "%s: public_key is missing; add the output of `wgmesh key public` (or `wg pubkey`) for this member", st.label)
	} else if s, ok := c.str(path+".public_key", st.label+": public_key", v, `"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="`); ok {
		k, err := ParseKey(s)
		if err != nil {
			c.add(path+".public_key", "%s: public_key %q is not a WireGuard public key: %v", st.label, s, err)
		} else {
			p.PublicKey = k
			if j, dup := x.keys[k]; dup {
				c.add(path+".public_key", "%s: public_key is already used by %s; every member needs its own key pair (wgmesh key generate)", st.label, c.other(x, j))
			} else {
				x.keys[k] = self
			}
		}
	}

	p.Addresses = c.addresses(path, st, t, b, x)

	if v, ok := t["endpoint"]; ok {
		if s, ok := c.str(path+".endpoint", st.label+": endpoint", v, `"host.example.com:51820"`); ok {
			if ep, err := ParseEndpoint(s); err != nil {
				c.add(path+".endpoint", "%s: %v", st.label, err)
			} else {
				p.Endpoint = ep
				if ap, ok := ep.Addr(); ok {
					x.endpoints = append(x.endpoints, subnetClaim{netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()), path + ".endpoint", self})
				}
			}
		}
	}

	if v, ok := t["endpoints"]; ok {
		if _, both := t["endpoint"]; both {
			c.add(path+".endpoints", "%s: endpoint and endpoints are both set; keep one: endpoints = [...] lists every address in the order to try, endpoint is a single one", st.label)
		} else {
			p.Endpoints = c.endpoints(path, st, v, x, self)
			if len(p.Endpoints) > 0 {
				p.Endpoint = p.Endpoints[0]
			}
		}
	}

	if v, ok := t["listen_port"]; ok {
		if n, ok := c.integer(path+".listen_port", st.label+": listen_port", v, 1, 65535); ok {
			p.ListenPort = uint16(n)
		}
	}

	p.Subnets = c.subnets(path, st, t, b, x, self)

	if v, ok := t["registry"]; ok {
		p.Registry, _ = c.boolean(path+".registry", st.label+": registry", v)
	}
	if v, ok := t["relay"]; ok {
		p.Relay, _ = c.boolean(path+".relay", st.label+": relay", v)
	}
	if v, ok := t["exit"]; ok {
		p.Exit, _ = c.boolean(path+".exit", st.label+": exit", v)
	}
	p.Groups = c.groups(path, st, t)
	return p
}

// MaxEndpoints bounds a member's endpoints list: each entry that does not
// answer costs a handshake attempt (5 s) before the next is tried.
const MaxEndpoints = 8

// endpoints checks a member's endpoints = [...]: one to MaxEndpoints
// host:port entries, each valid as endpoint, none repeated.
func (c *checker) endpoints(path string, st peerState, v any, x *crossCheck, self int) []Endpoint {
	vals, paths, ok := c.strList(path+".endpoints", st.label+": endpoints", v, `"192.168.1.5:51820"`)
	if !ok {
		return nil
	}
	switch n := len(v.([]any)); {
	case n == 0:
		c.add(path+".endpoints", "%s: endpoints is empty; list at least one host:port, or remove the key if the member has no public endpoint", st.label)
		return nil
	case n > MaxEndpoints:
		c.add(path+".endpoints", "%s: endpoints lists %d addresses, more than %d; each one that does not answer delays the next by a handshake attempt, so keep the few that can work", st.label, n, MaxEndpoints)
		return nil
	}
	var out []Endpoint
	seen := map[string]int{}
	for i, s := range vals {
		ep, err := ParseEndpoint(s)
		if err != nil {
			c.add(paths[i], "%s: endpoints: %v", st.label, err)
			continue
		}
		key := strings.ToLower(ep.String())
		if j, dup := seen[key]; dup {
			c.add(paths[i], "%s: endpoints lists %s twice (entries %d and %d); list it once", st.label, ep, j+1, i+1)
			continue
		}
		seen[key] = i
		if ap, ok := ep.Addr(); ok {
			x.endpoints = append(x.endpoints, subnetClaim{netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()), paths[i], self})
		}
		out = append(out, ep)
	}
	if len(out) != len(vals) {
		return nil
	}
	return out
}

func (c *checker) addresses(path string, st peerState, t map[string]any, b *Book, x *crossCheck) []netip.Addr {
	v, ok := t["addresses"]
	if !ok {
		c.add(path, "%s: addresses is missing; give the member at least one mesh address, e.g. addresses = [\"10.42.0.2\"]", st.label)
		return nil
	}
	vals, paths, ok := c.strList(path+".addresses", st.label+": addresses", v, `"10.42.0.2"`)
	if !ok {
		return nil
	}
	if len(v.([]any)) == 0 {
		c.add(path+".addresses", "%s: addresses is empty; give the member at least one mesh address", st.label)
		return nil
	}
	nets := b.Mesh.Networks
	var out []netip.Addr
	for i, s := range vals {
		a, err := parseHostAddr(s)
		if err != nil {
			c.add(paths[i], "%s: %v", st.label, err)
			continue
		}
		// Containment is only judged against networks that parsed; if
		// mesh.networks itself is broken that is the problem to report.
		if len(nets) > 0 {
			n, inside := b.NetworkOf(a)
			switch {
			case !inside:
				c.add(paths[i], "%s: address %s is outside the mesh networks (%s); pick an address inside one of them", st.label, a, joinPrefixes(nets))
				continue
			case isNetworkAddr(a, n):
				c.add(paths[i], "%s: address %s is the network address of %s; pick a host address such as %s", st.label, a, n, a.Next())
				continue
			case isBroadcastAddr(a, n):
				c.add(paths[i], "%s: address %s is the broadcast address of %s; pick a host address such as %s", st.label, a, n, a.Prev())
				continue
			}
		}
		if j, dup := x.addrs[a]; dup && j == len(x.states)-1 {
			c.add(paths[i], "%s: address %s is listed twice; list it once", st.label, a)
			continue
		} else if dup {
			c.add(paths[i], "%s: address %s is already used by %s; every address belongs to one member", st.label, a, c.other(x, j))
			continue
		}
		x.addrs[a] = len(x.states) - 1
		out = append(out, a)
	}
	return out
}

// parseHostAddr parses one member address: a bare IP, no prefix, no zone.
func parseHostAddr(s string) (netip.Addr, error) {
	if r, ok := controlChar(s); ok {
		return netip.Addr{}, fmt.Errorf("address %q contains control character %U", s, r)
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		suggest := s[:i]
		// "10.42.0.0/16" names a network, whose own address is no member's.
		if p, err := netip.ParsePrefix(s); err == nil && isNetworkAddr(p.Addr(), p) {
			suggest = p.Addr().Next().String()
		}
		return netip.Addr{}, fmt.Errorf("address %q must be a single IP without a prefix length; write %q (the prefix length comes from mesh.networks)", s, suggest)
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("address %q is not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %q has an IPv6 zone; write the address alone", s)
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("address %q is an IPv4-mapped IPv6 address; write it as %q", s, a.Unmap().String())
	}
	return a, nil
}

// isNetworkAddr reports whether a is the all-zeros host of n. Networks too
// small to have a separate network address (/31, /32, /127, /128) have none.
func isNetworkAddr(a netip.Addr, n netip.Prefix) bool {
	return n.Bits() <= a.BitLen()-2 && a == n.Masked().Addr()
}

// isBroadcastAddr reports whether a is the IPv4 all-ones host of n.
func isBroadcastAddr(a netip.Addr, n netip.Prefix) bool {
	if !a.Is4() || n.Bits() > 30 {
		return false
	}
	b := n.Masked().Addr().As4()
	host := uint32(1)<<(32-n.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return a == netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func (c *checker) subnets(path string, st peerState, t map[string]any, b *Book, x *crossCheck, self int) []netip.Prefix {
	v, ok := t["subnets"]
	if !ok {
		return nil
	}
	vals, paths, ok := c.strList(path+".subnets", st.label+": subnets", v, `"192.168.1.0/24"`)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for i, s := range vals {
		p, err := parseCanonicalPrefix(s)
		if err != nil {
			c.add(paths[i], "%s: subnet %v", st.label, err)
			continue
		}
		if p.Bits() == 0 {
			c.add(paths[i], "%s: subnet %q covers every address; a member cannot route everything for the mesh, list its LAN ranges instead", st.label, s)
			continue
		}
		x.claimed = append(x.claimed, subnetClaim{p, paths[i], self})
		if r, ok := overlapsMulticast(p); ok {
			c.add(paths[i], "%s: subnet %s overlaps the multicast range %s; multicast is not routed to one member, and every member would send its own multicast (mDNS, for one) into the tunnel; list unicast LAN ranges only", st.label, p, r)
			continue
		}
		if p.Contains(broadcast4) {
			c.add(paths[i], "%s: subnet %s contains the broadcast address %s; every member would send its broadcasts into the tunnel; list unicast LAN ranges only", st.label, p, broadcast4)
			continue
		}
		bad := false
		for _, n := range b.Mesh.Networks {
			if n.Overlaps(p) {
				c.add(paths[i], "%s: subnet %s overlaps mesh network %s; mesh addresses are already routed to their members, pick a LAN range outside the mesh", st.label, p, n)
				bad = true
				break
			}
		}
		if bad {
			continue
		}
		out = append(out, p)
		x.subnets = append(x.subnets, p)
		x.subnetPaths = append(x.subnetPaths, paths[i])
		x.subnetOwner = append(x.subnetOwner, self)
	}
	return out
}

// subnetOverlaps reports routes claimed twice. Two members claiming the same
// or overlapping range is the classic silent WireGuard failure: the peer
// configured last takes the route from the other.
func (c *checker) subnetOverlaps(x *crossCheck) {
	for _, pr := range overlaps(x.subnets) {
		a, b := pr[0], pr[1]
		if c.lines.line(x.subnetPaths[a]) > c.lines.line(x.subnetPaths[b]) {
			a, b = b, a
		}
		pa, pb := x.subnets[a], x.subnets[b]
		oa, ob := x.subnetOwner[a], x.subnetOwner[b]
		label := x.states[ob].label
		switch {
		case oa == ob && pa == pb:
			c.add(x.subnetPaths[b], "%s: subnet %s is listed twice; list it once", label, pb)
		case oa == ob:
			c.add(x.subnetPaths[b], "%s: subnets %s and %s overlap; list each range once", label, pa, pb)
		case pa == pb:
			c.add(x.subnetPaths[b], "%s: subnet %s is also claimed by %s; WireGuard routes each address to one peer only (the last one configured wins), so give the route to one member", label, pb, c.otherAt(x, oa, x.subnetPaths[a]))
		default:
			c.add(x.subnetPaths[b], "%s: subnet %s overlaps subnet %s of %s; WireGuard routes each address to one peer only (the last one configured wins), so give each range to one member", label, pb, pa, c.otherAt(x, oa, x.subnetPaths[a]))
		}
	}
}

func (c *checker) otherAt(x *crossCheck, i int, path string) string {
	return fmt.Sprintf("%s (line %d)", x.states[i].label, c.lines.line(path))
}

var (
	multicast  = []netip.Prefix{netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("ff00::/8")}
	broadcast4 = netip.MustParseAddr("255.255.255.255")
)

// overlapsMulticast returns the multicast range that p overlaps.
func overlapsMulticast(p netip.Prefix) (netip.Prefix, bool) {
	for _, m := range multicast {
		if m.Overlaps(p) {
			return m, true
		}
	}
	return netip.Prefix{}, false
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

// endpointsInSubnets refuses a subnet that contains a member's literal IP
// endpoint: every other member would route that endpoint into the tunnel,
// so WireGuard's own packets to the member would go to the subnet's router
// (or into the member's own tunnel) and never arrive. Loopback endpoints are
// exempt: the kernel never routes loopback through an interface, which is
// also why listing 127.0.0.0/8 stays allowed. Hostname endpoints are
// resolved only when a node applies the book.
func (c *checker) endpointsInSubnets(x *crossCheck) {
	var eps []subnetClaim
	for _, e := range x.endpoints {
		if !e.prefix.Addr().IsLoopback() {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return
	}
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].prefix.Addr().Less(eps[j].prefix.Addr()) })
	// Sorted endpoints and a binary search per subnet: O((n+m) log n), as
	// for the overlap sweep.
	for i, p := range x.subnets {
		first, last := p.Masked().Addr(), lastAddr(p)
		lo := sort.Search(len(eps), func(k int) bool { return !eps[k].prefix.Addr().Less(first) })
		hi := sort.Search(len(eps), func(k int) bool { return last.Less(eps[k].prefix.Addr()) })
		if lo >= hi {
			continue
		}
		e := eps[lo]
		owner, ep := x.subnetOwner[i], e.prefix.Addr()
		label := x.states[owner].label
		more := ""
		if n := hi - lo - 1; n > 0 {
			more = fmt.Sprintf(" (and %d more member endpoints)", n)
		}
		if e.owner == owner {
			c.add(x.subnetPaths[i], "%s: subnet %s contains the member's own endpoint %s%s; the other members would route that endpoint into the tunnel to the member itself, so their WireGuard packets would never reach it; list ranges that leave %s out, or give the member an endpoint outside its subnets", label, p, ep, more, ep)
			continue
		}
		other := x.states[e.owner].label
		c.add(x.subnetPaths[i], "%s: subnet %s contains the endpoint %s of %s%s; the other members would route that endpoint into the tunnel to %s, so their WireGuard packets would never reach %s; list ranges that leave %s out", label, p, ep, c.otherAt(x, e.owner, e.path), more, label, other, ep)
	}
}

// subnetsCoverAll refuses subnets that together cover every address of one
// IP version (0.0.0.0/1 and 128.0.0.0/1, say): that is a default route in
// pieces, with the same effect as the refused /0. Every subnet that parsed
// counts, refused or not, so the message appears however the book is fixed.
func (c *checker) subnetsCoverAll(x *crossCheck, version int) {
	bits := 32
	if version == 6 {
		bits = 128
	}
	var ps []subnetClaim
	for _, s := range x.claimed {
		if s.prefix.Addr().BitLen() == bits {
			ps = append(ps, s)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].prefix, ps[j].prefix
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	var next netip.Addr // the lowest address not yet covered
	if bits == 32 {
		next = netip.IPv4Unspecified()
	} else {
		next = netip.IPv6Unspecified()
	}
	var chain []subnetClaim
	for _, s := range ps {
		if next.Less(s.prefix.Addr()) {
			return // a gap
		}
		end := lastAddr(s.prefix)
		if end.Less(next) {
			continue // inside what the chain already covers
		}
		chain = append(chain, s)
		if next = end.Next(); !next.IsValid() {
			c.coverProblem(x, version, chain)
			return
		}
	}
}

func (c *checker) coverProblem(x *crossCheck, version int, chain []subnetClaim) {
	at := chain[0].path
	var parts []string
	for i, s := range chain {
		if c.lines.line(s.path) > c.lines.line(at) {
			at = s.path
		}
		if i < 4 {
			parts = append(parts, fmt.Sprintf("%s of %s", s.prefix, c.otherAt(x, s.owner, s.path)))
		}
	}
	if n := len(chain) - len(parts); n > 0 {
		parts = append(parts, fmt.Sprintf("%d more", n))
	}
	c.add(at, "the members' subnets together cover every IPv%d address (%s), like a default route; every member would send all its traffic, WireGuard's own included, into the mesh; list only the LAN ranges the members really route", version, strings.Join(parts, ", "))
}
