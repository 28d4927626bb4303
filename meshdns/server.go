package meshdns

import (
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/dnsserve"

	"github.com/wgmesh/wgmesh/peerbook"
)

// DefaultTTL is the TTL of answers, and the negative-caching TTL of the
// SOA, when Server.TTL is 0. It is short so that a book change reaches
// resolvers' caches quickly.
const DefaultTTL = 60

// Server answers queries about the members of the book that Book returns.
// Its ServeDNS method is a dns.Handler; ServePacketConn and ServeListener
// run it on sockets. Set the fields before serving; they must not change
// afterwards.
type Server struct {
	// Book returns the current peer book. Required; when it returns nil
	// every query gets SERVFAIL.
	Book func() *peerbook.Book
	// TTL of answers in seconds; 0 means DefaultTTL.
	TTL uint32
	// Logger receives one debug line per query and warnings for serving
	// errors. Nil discards them.
	Logger *slog.Logger

	sockets dnsserve.Group
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) ttl() uint32 {
	if s.TTL == 0 {
		return DefaultTTL
	}
	return s.TTL
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	var book *peerbook.Book
	if s.Book != nil {
		book = s.Book()
	}
	dnsserve.Send(w, req, s.Answer(req, book), s.log(), "dns")
}

// Answer returns the reply to req according to book. It is ServeDNS
// without the transport, for callers that have their own.
func (s *Server) Answer(req *dns.Msg, book *peerbook.Book) *dns.Msg {
	m, q, ok := dnsserve.NewReply(req)
	if !ok {
		return m
	}
	if book == nil {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	z := newZones(book)
	name := strings.ToLower(dns.Fqdn(q.Name))
	switch {
	case name == z.forward:
		s.apex(m, z, z.forward, q)
	case strings.HasSuffix(name, "."+z.forward):
		label := strings.TrimSuffix(name, "."+z.forward)
		p, ok := (*peerbook.Peer)(nil), false
		if !strings.Contains(label, ".") {
			p, ok = book.PeerByName(label)
		}
		if !ok {
			s.negative(m, z, z.forward, dns.RcodeNameError)
			return m
		}
		s.member(m, z, p, q)
	case dns.CountLabel(name) == 1:
		// A bare member name; other single labels are not ours.
		p, ok := book.PeerByName(strings.TrimSuffix(name, "."))
		if !ok {
			m.Rcode = dns.RcodeRefused
			return m
		}
		s.member(m, z, p, q)
	default:
		s.reverse(m, z, name, q)
	}
	return m
}

// member answers a query for a member's name.
func (s *Server) member(m *dns.Msg, z *zones, p *peerbook.Peer, q dns.Question) {
	m.Authoritative = true
	for _, a := range p.Addresses {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: s.ttl()}
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		s.negative(m, z, z.forward, dns.RcodeSuccess) // NODATA
	}
}

// apex answers a query for a zone's own name: its SOA, else NODATA.
func (s *Server) apex(m *dns.Msg, z *zones, zone string, q dns.Question) {
	m.Authoritative = true
	if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
		soa := z.soa(zone, s.ttl())
		soa.Hdr.Name = q.Name
		m.Answer = append(m.Answer, soa)
		return
	}
	s.negative(m, z, zone, dns.RcodeSuccess)
}

// negative sets rcode with the zone's SOA in the authority section, so
// resolvers can cache the answer (RFC 2308).
func (s *Server) negative(m *dns.Msg, z *zones, zone string, rcode int) {
	m.Authoritative = true
	m.Rcode = rcode
	m.Ns = append(m.Ns, z.soa(zone, s.ttl()))
}

// reverse answers PTR queries for members' addresses and the names around
// them in the mesh networks' reverse zones.
func (s *Server) reverse(m *dns.Msg, z *zones, name string, q dns.Question) {
	if p, ok := z.ptr[name]; ok {
		m.Authoritative = true
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.PTR{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: s.ttl()},
				Ptr: dns.Fqdn(strings.ToLower(p.Name) + "." + z.forward),
			})
			return
		}
		s.negative(m, z, z.reverseZoneOf(name), dns.RcodeSuccess)
		return
	}
	zone := z.reverseZoneOf(name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return
	}
	if ip, ok := parseReverse(name); ok && !z.inNetworks(ip) {
		// The zone was rounded out to a label boundary; this address
		// is not in the mesh.
		m.Rcode = dns.RcodeRefused
		return
	}
	if name == zone {
		s.apex(m, z, zone, q)
		return
	}
	for ptr := range z.ptr {
		if strings.HasSuffix(ptr, "."+name) {
			s.negative(m, z, zone, dns.RcodeSuccess) // an empty non-terminal
			return
		}
	}
	s.negative(m, z, zone, dns.RcodeNameError)
}

// zones is the view of one book that answers need.
type zones struct {
	book     *peerbook.Book
	forward  string                    // "mesh."
	reverses []string                  // "42.10.in-addr.arpa.", ...
	ptr      map[string]*peerbook.Peer // reverse name → member
}

func newZones(book *peerbook.Book) *zones {
	domain := book.Mesh.Domain
	if domain == "" {
		domain = peerbook.DefaultDomain
	}
	z := &zones{
		book:    book,
		forward: dns.Fqdn(strings.ToLower(strings.Trim(domain, "."))),
		ptr:     make(map[string]*peerbook.Peer),
	}
	for _, n := range book.Mesh.Networks {
		z.reverses = append(z.reverses, reverseZone(n))
	}
	for i := range book.Peers {
		p := &book.Peers[i]
		for _, a := range p.Addresses {
			if r, err := dns.ReverseAddr(a.Unmap().String()); err == nil {
				z.ptr[r] = p
			}
		}
	}
	return z
}

func (z *zones) soa(zone string, ttl uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      z.forward,
		Mbox:    "hostmaster." + z.forward,
		Serial:  uint32(z.book.Serial),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
}

// reverseZoneOf returns the longest reverse zone holding name, or "".
func (z *zones) reverseZoneOf(name string) string {
	best := ""
	for _, r := range z.reverses {
		if (name == r || strings.HasSuffix(name, "."+r)) && len(r) > len(best) {
			best = r
		}
	}
	if best == "" {
		// A member address outside every network (a book without
		// networks): its own name is its zone.
		if _, ok := z.ptr[name]; ok {
			return name
		}
	}
	return best
}

func (z *zones) inNetworks(ip netip.Addr) bool {
	for _, n := range z.book.Mesh.Networks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// reverseZone is the in-addr.arpa or ip6.arpa name of prefix p, rounded
// out to the nearest label boundary (8 bits for IPv4, 4 for IPv6).
func reverseZone(p netip.Prefix) string {
	p = p.Masked()
	b := p.Addr().AsSlice()
	var labels []string
	if p.Addr().Is4() {
		for i := range p.Bits() / 8 {
			labels = append(labels, strconv.Itoa(int(b[i])))
		}
		return join(labels, "in-addr.arpa.")
	}
	for i := range p.Bits() / 4 {
		nib := b[i/2] >> 4
		if i%2 == 1 {
			nib = b[i/2] & 0x0f
		}
		labels = append(labels, strconv.FormatUint(uint64(nib), 16))
	}
	return join(labels, "ip6.arpa.")
}

// join writes labels in reverse order in front of suffix.
func join(labels []string, suffix string) string {
	var sb strings.Builder
	for i := len(labels) - 1; i >= 0; i-- {
		sb.WriteString(labels[i])
		sb.WriteByte('.')
	}
	sb.WriteString(suffix)
	return sb.String()
}

// parseReverse returns the address a full reverse name stands for.
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			// Only the canonical spelling: "010" is not the label of 10,
			// so each address has one reverse name.
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 16, 4)
			if err != nil || len(l) != 1 {
				return netip.Addr{}, false
			}
			j := 31 - i
			if j%2 == 0 {
				b[j/2] |= byte(v) << 4
			} else {
				b[j/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
