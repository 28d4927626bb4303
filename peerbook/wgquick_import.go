package peerbook

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
)

// WGQuickFile is one wg-quick(8) configuration to import. Each file is one
// machine; its name without directory and ".conf" becomes the member name.
type WGQuickFile struct {
	Name string
	Data []byte
}

// MaxWGQuickSize bounds a wg-quick file to import; a config with
// thousands of peers is well under it.
const MaxWGQuickSize = 1 << 20

// Imported is a peer book made from wg-quick files.
type Imported struct {
	Book *Book
	// TOML is the book's text, ready to be saved; it passes Parse.
	TOML []byte
	// Notes list what was dropped or guessed, as FILE:LINE: message. They
	// deserve a read before the book replaces the old configs.
	Notes []string
}

// ImportWGQuick turns the configs of an existing WireGuard network into a
// peer book:
//
//   - a file's [Interface] PrivateKey gives the member's public key; a file
//     without one (a config kept without its secret) learns the key from
//     another file's [Peer] whose AllowedIPs is exactly its address;
//   - Address gives the member's addresses, and its prefix lengths the mesh
//     networks; ListenPort and MTU carry over;
//   - how the other files reach a member gives its Endpoint, and AllowedIPs
//     beyond its own addresses give its subnets;
//   - a hub-and-spoke network is recognised by spokes that route a whole
//     mesh network through the hub: that route is dropped (in the mesh every
//     member reaches every other directly) rather than made a subnet.
//
// [Peer] keys that belong to none of the files become members named
// "member1", "member2"... with a note to rename them. What cannot be
// expressed (PresharedKey, unknown keys, conflicting routes) is refused with
// an *Error; what the mesh does not need (DNS, Table, PostUp...) is noted.
func ImportWGQuick(files []WGQuickFile) (*Imported, error) {
	var errs, notes []Problem
	var cfgs []*wqConfig
	for _, f := range files {
		cfgs = append(cfgs, parseWGQuick(f.Name, f.Data, &errs, &notes))
	}
	if len(cfgs) == 0 {
		return nil, errors.New("import: no wg-quick files given")
	}
	if len(errs) > 0 {
		return nil, problemsError(errs)
	}
	im := &importer{cfgs: cfgs}
	im.run()
	notes = append(notes, im.notes...)
	if len(im.errs) > 0 {
		return nil, problemsError(im.errs)
	}

	text := Marshal(im.book)
	b, err := Parse("imported.toml", text)
	if err != nil {
		// Overlaps between routes of different members end up here: say
		// so, with the generated text's lines, rather than lose them.
		return nil, fmt.Errorf("import: the generated book is not valid:\n%w", err)
	}
	out := &Imported{Book: b, TOML: text}
	sortProblems(notes)
	for _, n := range notes {
		out.Notes = append(out.Notes, n.String())
	}
	return out, nil
}

func problemsError(ps []Problem) error {
	sortProblems(ps)
	return &Error{Problems: ps}
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].File != ps[j].File {
			return ps[i].File < ps[j].File
		}
		return ps[i].Line < ps[j].Line
	})
}

type importer struct {
	cfgs  []*wqConfig
	errs  []Problem
	notes []Problem

	book    *Book
	members []*imMember
	byKey   map[Key]*imMember
	hubs    map[*imMember]bool
}

// imMember is a member being assembled, with where its facts came from.
type imMember struct {
	peer Peer
	cfg  *wqConfig // nil for members known only from [Peer] sections
	// where it was first seen, for messages
	srcFile string
	srcLine int
	src     string // FILE:LINE
	epFrom  string // FILE:LINE of the endpoint kept
}

// route is one AllowedIPs entry pointing at a member.
type route struct {
	prefix netip.Prefix
	to     *imMember
	file   string
	line   int
}

func (im *importer) bad(file string, line int, format string, args ...any) {
	im.errs = append(im.errs, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (im *importer) note(file string, line int, format string, args ...any) {
	im.notes = append(im.notes, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (im *importer) run() {
	im.book = &Book{Format: CurrentFormat, Serial: 1, Mesh: Mesh{
		Domain: DefaultDomain, ListenPort: DefaultListenPort, MTU: DefaultMTU, PersistentKeepalive: DefaultKeepalive,
	}}
	im.byKey = make(map[Key]*imMember)
	im.hubs = make(map[*imMember]bool)
	if !im.identify() {
		return
	}
	im.external()
	if !im.networks() {
		return
	}
	im.addresses()
	im.settings()
	im.routes()
	for _, m := range im.members {
		im.book.Peers = append(im.book.Peers, m.peer)
	}
}

// identify finds every file's public key: from its private key, else from
// the host route other files give it.
func (im *importer) identify() bool {
	hostRoutes := make(map[netip.Addr][]Key)
	for _, c := range im.cfgs {
		for _, p := range c.peers {
			if !p.hasKey {
				im.bad(c.file, p.line, "[Peer] has no PublicKey")
				continue
			}
			for _, q := range p.allowed {
				if q.IsSingleIP() {
					hostRoutes[q.Addr()] = appendKey(hostRoutes[q.Addr()], p.key)
				}
			}
		}
	}
	names := make(map[string]string)
	for _, c := range im.cfgs {
		m := &imMember{cfg: c, srcFile: c.file, srcLine: c.ifaceLine, src: fmt.Sprintf("%s:%d", c.file, c.ifaceLine)}
		m.peer.Name = c.member
		if prev, dup := names[lower(c.member)]; dup {
			im.bad(c.file, 0, "member name %q is also the name of %s; rename one of the files", c.member, prev)
		}
		names[lower(c.member)] = c.file
		switch {
		case c.priv != nil:
			m.peer.PublicKey = c.priv.Public()
		default:
			var keys []Key
			for _, a := range c.addrs {
				for _, k := range hostRoutes[a.Addr()] {
					keys = appendKey(keys, k)
				}
			}
			switch len(keys) {
			case 0:
				im.bad(c.file, c.ifaceLine, "no PrivateKey, and no other file has a [Peer] with AllowedIPs = %s to learn this member's public key from; add the PrivateKey (it stays in this file, never in the book)", netip.PrefixFrom(c.addrs[0].Addr(), c.addrs[0].Addr().BitLen()))
				continue
			case 1:
				m.peer.PublicKey = keys[0]
				im.note(c.file, c.ifaceLine, "no PrivateKey: public key %s learnt from the [Peer] that routes %s", keys[0], c.addrs[0].Addr())
			default:
				im.bad(c.file, c.ifaceLine, "no PrivateKey, and other files route its address to %d different public keys; add the PrivateKey", len(keys))
				continue
			}
		}
		if other, dup := im.byKey[m.peer.PublicKey]; dup {
			im.bad(c.file, c.ifaceLine, "same key pair as %s (%s); every member needs its own", other.peer.Name, other.src)
			continue
		}
		im.byKey[m.peer.PublicKey] = m
		im.members = append(im.members, m)
	}
	return len(im.errs) == 0
}

func (im *importer) nameTaken(name string) bool {
	for _, m := range im.members {
		if lower(m.peer.Name) == name {
			return true
		}
	}
	return false
}

func appendKey(ks []Key, k Key) []Key {
	for _, x := range ks {
		if x == k {
			return ks
		}
	}
	return append(ks, k)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// external adds the peers that no file describes (a phone, a machine whose
// config was not given): their addresses are their host routes.
func (im *importer) external() {
	n := 0
	for _, c := range im.cfgs {
		for _, p := range c.peers {
			if _, known := im.byKey[p.key]; known {
				continue
			}
			n++
			for im.nameTaken("member" + strconv.Itoa(n)) {
				n++
			}
			m := &imMember{srcFile: c.file, srcLine: p.line, src: fmt.Sprintf("%s:%d", c.file, p.line)}
			m.peer.Name = "member" + strconv.Itoa(n)
			m.peer.PublicKey = p.key
			im.byKey[p.key] = m
			im.members = append(im.members, m)
			im.note(c.file, p.line, "[Peer] %s is none of the imported files; added as member %q, rename it in the book", p.key, m.peer.Name)
		}
	}
}

// networks derives the mesh networks from the interface addresses. A /32
// interface address says nothing about the network; it is then taken from
// a route that covers it, typically a spoke's route to its hub.
func (im *importer) networks() bool {
	type cand struct {
		p    netip.Prefix
		file string
		line int
	}
	var cands []cand
	for _, c := range im.cfgs {
		for i, a := range c.addrs {
			if !a.IsSingleIP() {
				cands = append(cands, cand{a.Masked(), c.file, c.addrLines[i]})
			}
		}
	}
	// Widest first, so a narrower duplicate of a network is folded into it.
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].p.Bits() < cands[j].p.Bits() })
	var nets []netip.Prefix
	var from []cand
outer:
	for _, c := range cands {
		for i, n := range nets {
			if n.Overlaps(c.p) {
				if n != c.p {
					im.note(c.file, c.line, "address prefix %s lies inside network %s (from %s:%d); the mesh uses %s", c.p, n, from[i].file, from[i].line, n)
				}
				continue outer
			}
		}
		nets = append(nets, c.p)
		from = append(from, c)
	}

	for _, m := range im.members {
		c := m.cfg
		if c == nil {
			continue
		}
		for i, a := range c.addrs {
			if covered(nets, a.Addr()) {
				continue
			}
			if n, ok := im.coveringRoute(a.Addr()); ok {
				nets = append(nets, n)
				im.note(c.file, c.addrLines[i], "Address %s has no network prefix; using %s, the range other files route to the mesh", a, n)
				continue
			}
			im.bad(c.file, c.addrLines[i], "Address %s gives no mesh network; write the prefix length of the network, e.g. %s", a, netip.PrefixFrom(a.Addr(), 24))
		}
	}
	im.book.Mesh.Networks = nets
	return len(im.errs) == 0
}

func covered(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// coveringRoute finds the narrowest AllowedIPs range (not a host route, not
// a default route) that contains a.
func (im *importer) coveringRoute(a netip.Addr) (netip.Prefix, bool) {
	var best netip.Prefix
	for _, c := range im.cfgs {
		for _, p := range c.peers {
			for _, q := range p.allowed {
				if q.Bits() > 0 && !q.IsSingleIP() && q.Contains(a) && (!best.IsValid() || q.Bits() > best.Bits()) {
					best = q
				}
			}
		}
	}
	return best, best.IsValid()
}

func (im *importer) addresses() {
	for _, m := range im.members {
		if m.cfg != nil {
			for _, a := range m.cfg.addrs {
				m.peer.Addresses = append(m.peer.Addresses, a.Addr())
			}
			continue
		}
		for _, c := range im.cfgs {
			for _, p := range c.peers {
				if p.key != m.peer.PublicKey {
					continue
				}
				for _, q := range p.allowed {
					if q.IsSingleIP() && covered(im.book.Mesh.Networks, q.Addr()) && !containsAddr(m.peer.Addresses, q.Addr()) {
						m.peer.Addresses = append(m.peer.Addresses, q.Addr())
					}
				}
			}
		}
		if len(m.peer.Addresses) == 0 {
			im.bad(m.srcFile, m.srcLine, "[Peer] %s has no AllowedIPs address inside the mesh networks (%s), so it cannot become a member", m.peer.PublicKey, joinPrefixes(im.book.Mesh.Networks))
		}
	}
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// settings carries over endpoints, listen ports, MTU and keepalive.
func (im *importer) settings() {
	mtu, mtuFrom := 0, ""
	keepalive := 0
	for _, c := range im.cfgs {
		if c.mtu != 0 {
			switch {
			case mtu == 0:
				mtu, mtuFrom = c.mtu, fmt.Sprintf("%s:%d", c.file, c.mtuLine)
			case c.mtu != mtu:
				im.note(c.file, c.mtuLine, "MTU %d differs from %d (%s); the mesh uses the smaller", c.mtu, mtu, mtuFrom)
				mtu = min(mtu, c.mtu)
			}
		}
		for _, p := range c.peers {
			m := im.byKey[p.key]
			keepalive = max(keepalive, p.keepalive)
			if p.endpoint.IsZero() {
				continue
			}
			switch {
			case m.peer.Endpoint.IsZero():
				m.peer.Endpoint = p.endpoint
				m.epFrom = fmt.Sprintf("%s:%d", c.file, p.epLine)
			case m.peer.Endpoint != p.endpoint:
				im.note(c.file, p.epLine, "Endpoint %s of %s differs from %s (%s); the book keeps the first", p.endpoint, m.peer.Name, m.peer.Endpoint, m.epFrom)
			}
		}
	}
	if mtu != 0 {
		im.book.Mesh.MTU = mtu
	}
	if keepalive > 0 {
		im.book.Mesh.PersistentKeepalive = uint16(keepalive)
	}
	for _, m := range im.members {
		if m.cfg == nil || m.cfg.listenPort == 0 {
			continue
		}
		// Only where it differs from what the book would assume anyway.
		m.peer.ListenPort = m.cfg.listenPort
		if im.book.ListenPortOf(&Peer{Endpoint: m.peer.Endpoint}) == m.cfg.listenPort {
			m.peer.ListenPort = 0
		}
	}
}

// routes turns AllowedIPs into subnets. Routes inside the mesh are either a
// member's own address or forwarding through a hub; neither is a subnet.
func (im *importer) routes() {
	var rs []route
	for _, c := range im.cfgs {
		for _, p := range c.peers {
			m := im.byKey[p.key]
			for i, q := range p.allowed {
				line := p.allowLines[i]
				switch {
				case containsAddr(m.peer.Addresses, q.Addr()) && q.IsSingleIP():
					// the member's own address
				case q.Bits() == 0:
					im.note(c.file, line, "AllowedIPs %s sends all traffic through %s (an exit node); a mesh does not do that, the route is dropped", q, m.peer.Name)
				case coversNetwork(im.book.Mesh.Networks, q):
					im.hubs[m] = true
					im.note(c.file, line, "AllowedIPs %s routes the whole mesh through %s (hub and spoke); in the mesh every member reaches every other directly, the route is dropped", q, m.peer.Name)
				case overlapsAny(im.book.Mesh.Networks, q):
					im.note(c.file, line, "AllowedIPs %s is inside the mesh but not an address of %s; members reach each other directly, the route is dropped", q, m.peer.Name)
				default:
					rs = append(rs, route{prefix: q, to: m, file: c.file, line: line})
				}
			}
		}
	}

	// The same range routed to a hub by spokes and to its real owner by the
	// hub belongs to the owner; routed to two owners it is a conflict.
	byPrefix := make(map[netip.Prefix][]route)
	var order []netip.Prefix
	for _, r := range rs {
		if _, seen := byPrefix[r.prefix]; !seen {
			order = append(order, r.prefix)
		}
		byPrefix[r.prefix] = append(byPrefix[r.prefix], r)
	}
	for _, q := range order {
		claims := byPrefix[q]
		var owners []route
		for _, r := range claims {
			if !im.hubs[r.to] || allTo(claims, r.to) {
				if !hasOwner(owners, r.to) {
					owners = append(owners, r)
				}
			}
		}
		if len(owners) == 0 {
			// Only hubs claim it, so no claim is more credible than another.
			for _, r := range claims {
				if !hasOwner(owners, r.to) {
					owners = append(owners, r)
				}
			}
		}
		if len(owners) > 1 {
			a, b := owners[0], owners[1]
			im.bad(b.file, b.line, "AllowedIPs %s routes to %s, but %s:%d routes it to %s; a route belongs to one member", q, b.to.peer.Name, a.file, a.line, a.to.peer.Name)
			continue
		}
		owner := owners[0].to
		for _, r := range claims {
			if r.to != owner {
				im.note(r.file, r.line, "AllowedIPs %s is forwarded by %s here, but belongs to %s (%s:%d); the book routes it to %s directly", q, r.to.peer.Name, owner.peer.Name, owners[0].file, owners[0].line, owner.peer.Name)
			}
		}
		owner.peer.Subnets = append(owner.peer.Subnets, q)
	}
}

func coversNetwork(nets []netip.Prefix, q netip.Prefix) bool {
	for _, n := range nets {
		if q.Bits() <= n.Bits() && q.Contains(n.Addr()) {
			return true
		}
	}
	return false
}

func overlapsAny(nets []netip.Prefix, q netip.Prefix) bool {
	for _, n := range nets {
		if n.Overlaps(q) {
			return true
		}
	}
	return false
}

func allTo(rs []route, m *imMember) bool {
	for _, r := range rs {
		if r.to != m {
			return false
		}
	}
	return true
}

func hasOwner(rs []route, m *imMember) bool {
	for _, r := range rs {
		if r.to == m {
			return true
		}
	}
	return false
}
