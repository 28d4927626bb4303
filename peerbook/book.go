// Package peerbook reads, validates and compares wgmesh peer books.
//
// A peer book is one TOML file that lists every member of a WireGuard full
// mesh: its name, public key, mesh addresses, optional endpoint and the
// private subnets it routes. It holds public facts only. Every node loads the
// same book, finds itself by its own public key and configures all other
// members as peers.
//
// Parse is strict: unknown keys, bad values and conflicts between members are
// all reported at once, each as FILE:LINE: message.
package peerbook

import (
	"net/netip"
	"strconv"
)

// CurrentFormat is the only book format this version understands.
const CurrentFormat = 1

// MaxSize is the largest book Parse accepts, in bytes. It is large enough for
// tens of thousands of members and small enough that a hostile file cannot
// exhaust memory.
const MaxSize = 16 << 20

// Defaults used where the book sets no value.
const (
	DefaultDomain     = "mesh"
	DefaultListenPort = 51820
	DefaultMTU        = 1420
	DefaultKeepalive  = 25 // seconds
)

// Book is a parsed and validated peer book.
type Book struct {
	Format int
	// Serial increases with every published change of the book.
	Serial uint64
	Mesh   Mesh
	Peers  []Peer
	// Rules are the access rules, in book order; none allows everything.
	Rules []Rule
	// Source names the file the book came from, for messages.
	Source string

	// keys indexes Peers by public key (see index.go).
	keys *keyIndex
}

// Mesh holds the settings shared by every member.
type Mesh struct {
	// Domain is the DNS suffix of member names ("mesh": NAME.mesh).
	Domain string
	// Networks are the mesh address ranges; every member address lies in one.
	Networks []netip.Prefix
	// ListenPort is the UDP port of members that set none.
	ListenPort uint16
	// MTU of the mesh interface.
	MTU int
	// PersistentKeepalive in seconds, used towards and from members that have
	// no endpoint (typically behind NAT). 0 disables it.
	PersistentKeepalive uint16
	// NoLANCandidates (lan_candidates = false) stops members from
	// announcing their local underlay addresses to registry members and
	// from trying those that others announce (see the registry package).
	NoLANCandidates bool
}

// Endpoint is where a member can be reached: an IP literal or a hostname,
// and a port.
type Endpoint struct {
	// Host is an IP address literal or a DNS name.
	Host string
	Port uint16
}

// IsZero reports whether no endpoint is set.
func (e Endpoint) IsZero() bool { return e.Host == "" }

// Addr returns the endpoint as an address and port when Host is an IP literal.
func (e Endpoint) Addr() (netip.AddrPort, bool) {
	ip, err := netip.ParseAddr(e.Host)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), e.Port), true
}

// String returns host:port, bracketing IPv6 literals.
func (e Endpoint) String() string {
	if e.IsZero() {
		return ""
	}
	if ap, ok := e.Addr(); ok {
		return ap.String()
	}
	return e.Host + ":" + strconv.Itoa(int(e.Port))
}

// Peer is one member of the mesh.
type Peer struct {
	Name      string
	PublicKey Key
	// Addresses are the member's mesh addresses (single hosts).
	Addresses []netip.Addr
	// Endpoint is optional; zero for members behind NAT. When the book
	// lists endpoints = [...], it is the first of Endpoints.
	Endpoint Endpoint
	// Endpoints, when set (endpoints = [...] in the book), are every
	// address of the member in the order to try: a node moves to the next
	// when a handshake does not succeed. Nil for a single endpoint.
	Endpoints []Endpoint
	// ListenPort is the port this member binds; 0 means unset (see
	// Book.ListenPortOf for the fallback rule).
	ListenPort uint16
	// Subnets are private LANs routed through this member.
	Subnets []netip.Prefix
	// Registry marks a member that offers endpoint discovery.
	Registry bool
	// Relay marks a member that may forward between members that cannot meet.
	Relay bool
	// Exit marks a member that may forward non-mesh traffic for members
	// that choose it as their exit node.
	Exit bool
	// Groups are the member's group names (DNS labels), for access rules.
	Groups []string
	// Line is the line of the member's [[peer]] header in the source file.
	Line int
}

// EndpointList returns every endpoint of p in the order to try: Endpoints,
// else Endpoint alone, else nil.
func (p *Peer) EndpointList() []Endpoint {
	if len(p.Endpoints) > 0 {
		return p.Endpoints
	}
	if !p.Endpoint.IsZero() {
		return []Endpoint{p.Endpoint}
	}
	return nil
}

// PeerByKey returns the member with public key k.
func (b *Book) PeerByKey(k Key) (*Peer, bool) {
	if p, ok := b.keys.lookup(b, k); ok {
		return p, true
	}
	for i := range b.Peers {
		if b.Peers[i].PublicKey == k {
			return &b.Peers[i], true
		}
	}
	return nil, false
}

// PeerByName returns the member called name (case-insensitive; a trailing
// ".DOMAIN" or "." is accepted).
func (b *Book) PeerByName(name string) (*Peer, bool) {
	name = b.trimDomain(name)
	for i := range b.Peers {
		if equalFold(b.Peers[i].Name, name) {
			return &b.Peers[i], true
		}
	}
	return nil, false
}

func (b *Book) trimDomain(name string) string {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	suffix := "." + b.Mesh.Domain
	if len(name) > len(suffix) && equalFold(name[len(name)-len(suffix):], suffix) {
		name = name[:len(name)-len(suffix)]
	}
	return name
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ListenPortOf is the UDP port member p binds: its own listen_port, else its
// endpoint's port, else the mesh default. Behind a port-forwarding NAT the
// public endpoint port and the local port may differ, hence listen_port.
func (b *Book) ListenPortOf(p *Peer) uint16 {
	switch {
	case p.ListenPort != 0:
		return p.ListenPort
	case !p.Endpoint.IsZero():
		return p.Endpoint.Port
	case b.Mesh.ListenPort != 0:
		return b.Mesh.ListenPort
	}
	return DefaultListenPort
}

// AllowedIPs are the prefixes routed to member p: its addresses as host
// prefixes, then its subnets.
func (p *Peer) AllowedIPs() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(p.Addresses)+len(p.Subnets))
	for _, a := range p.Addresses {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return append(out, p.Subnets...)
}

// KeepaliveBetween is the persistent keepalive interval, in seconds, that
// self should use towards peer: the mesh setting when either side has no
// endpoint (one of them is behind NAT and must keep its mapping open), else 0.
func (b *Book) KeepaliveBetween(self, peer *Peer) uint16 {
	if self.Endpoint.IsZero() || peer.Endpoint.IsZero() {
		return b.Mesh.PersistentKeepalive
	}
	return 0
}

// NetworkOf returns the mesh network that contains addr, for assigning
// interface addresses with the right prefix length.
func (b *Book) NetworkOf(addr netip.Addr) (netip.Prefix, bool) {
	for _, n := range b.Mesh.Networks {
		if n.Contains(addr) {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// SubnetCovering returns the member whose subnets contain addr, and that
// subnet. Loopback addresses are never covered: the kernel does not route
// them through an interface, so a loopback subnet captures nothing.
func (b *Book) SubnetCovering(addr netip.Addr) (*Peer, netip.Prefix, bool) {
	addr = addr.Unmap()
	if addr.IsLoopback() {
		return nil, netip.Prefix{}, false
	}
	for i := range b.Peers {
		for _, s := range b.Peers[i].Subnets {
			if s.Contains(addr) {
				return &b.Peers[i], s, true
			}
		}
	}
	return nil, netip.Prefix{}, false
}
