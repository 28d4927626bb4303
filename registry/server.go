package registry

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/dnsserve"

	"github.com/wgmesh/wgmesh/peerbook"
)

// txtMax is the longest character-string a TXT record can hold.
const txtMax = 255

// Member is what a registry publishes about one member of the mesh.
type Member struct {
	// PublicKey identifies the member; its Label names the instance.
	PublicKey peerbook.Key
	// Endpoint is the address and port the registry observes the member
	// sending from (its NAT's public mapping). A member without a valid
	// endpoint, with port 0 or with an unspecified address is not
	// published.
	Endpoint netip.AddrPort
	// AllowedIPs are the member's mesh addresses and routed subnets,
	// published in the TXT record.
	AllowedIPs []netip.Prefix
	// LAN are the member's own underlay addresses with its listen port,
	// as it announced them (see Announce): where members behind the same
	// NAT reach it directly. Published in the TXT record as lan=ADDR:PORT
	// strings, which wgsd clients ignore.
	LAN []netip.AddrPort
}

// published reports whether m has an endpoint worth publishing.
func (m *Member) published() bool {
	return m.Endpoint.IsValid() && m.Endpoint.Port() != 0 && !m.Endpoint.Addr().IsUnspecified()
}

// Server answers DNS-SD queries about the members that Members returns, in
// the record format of the wgsd CoreDNS plugin. Its ServeDNS method is a
// dns.Handler; ServePacketConn and ServeListener run it on sockets. Set
// the fields before serving; they must not change afterwards.
type Server struct {
	// Zone the server is authoritative for, e.g. "mesh." (case and the
	// trailing dot do not matter). Empty means "mesh.".
	Zone string
	// Members returns the members to publish. Required; it is called on
	// every query, so answers follow the live state at once. When it is
	// nil every query gets SERVFAIL. If a key repeats, the first member
	// with it wins.
	Members func() []Member
	// Logger receives one debug line per query and warnings for serving
	// errors. Nil discards them.
	Logger *slog.Logger
	// Owner reports which member sends from the mesh address from, so
	// that an announcement (a DNS UPDATE, see Announce) is accepted only
	// for the sender's own key. Nil refuses every announcement.
	Owner func(from netip.Addr) (peerbook.Key, bool)

	sockets dnsserve.Group
	lanMu   sync.Mutex
	lan     map[peerbook.Key]lanEntry
}

// lanEntry is one member's announced LAN candidates.
type lanEntry struct {
	addrs []netip.AddrPort
	at    time.Time
}

// LANTTL is how long announced LAN candidates are published after the
// member's last announcement.
const LANTTL = 3 * time.Minute

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ServeDNS implements dns.Handler. Replies over UDP fit the client's
// buffer (see dnsserve.Send).
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if req.Opcode == dns.OpcodeUpdate {
		var from netip.Addr
		if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err == nil {
			from = ap.Addr().Unmap()
		}
		dnsserve.Send(w, req, s.update(req, from), s.log(), "registry")
		return
	}
	dnsserve.Send(w, req, s.Answer(req), s.log(), "registry")
}

// Answer returns the reply to req, before any truncation. It is ServeDNS
// without the transport, for callers that have their own.
func (s *Server) Answer(req *dns.Msg) *dns.Msg {
	m, q, ok := dnsserve.NewReply(req)
	if !ok {
		return m
	}
	if s.Members == nil {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	zone := normalizeZone(s.Zone)
	name := strings.ToLower(dns.Fqdn(q.Name))
	if name != zone && !strings.HasSuffix(name, "."+zone) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	service := Service + zone
	switch {
	case name == zone:
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			soa := soaRecord(zone)
			soa.Hdr.Name = q.Name
			m.Answer = append(m.Answer, soa)
			return m
		}
		negative(m, zone, dns.RcodeSuccess)
	case name == service:
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			for _, mb := range s.published() {
				m.Answer = append(m.Answer, &dns.PTR{
					Hdr: header(q.Name, dns.TypePTR),
					Ptr: InstanceName(zone, mb.PublicKey),
				})
			}
		}
		if len(m.Answer) == 0 {
			negative(m, zone, dns.RcodeSuccess)
		}
	case name == "_udp."+zone:
		negative(m, zone, dns.RcodeSuccess) // an empty non-terminal
	default:
		k, ok := instanceKey(name, zone)
		if !ok {
			negative(m, zone, dns.RcodeNameError)
			return m
		}
		var mb *Member
		for _, c := range s.published() {
			if c.PublicKey == k {
				mb = &c
				break
			}
		}
		if mb == nil {
			negative(m, zone, dns.RcodeNameError)
			return m
		}
		instance(m, zone, q, mb)
	}
	return m
}

// instance answers a query for a member's instance name.
func instance(m *dns.Msg, zone string, q dns.Question, mb *Member) {
	target := InstanceName(zone, mb.PublicKey)
	host := hostRecord(target, mb.Endpoint.Addr())
	switch q.Qtype {
	case dns.TypeSRV:
		m.Answer = append(m.Answer, srvRecord(q.Name, target, mb.Endpoint.Port()))
		// wgsd-client reads the address from the first additional
		// record, so the host record goes before the TXT.
		m.Extra = append(m.Extra, host, txtRecord(target, mb))
	case dns.TypeA, dns.TypeAAAA:
		if host.Header().Rrtype == q.Qtype {
			host.Header().Name = q.Name
			m.Answer = append(m.Answer, host)
		}
	case dns.TypeTXT:
		m.Answer = append(m.Answer, txtRecord(q.Name, mb))
	case dns.TypeANY:
		host.Header().Name = q.Name
		m.Answer = append(m.Answer, srvRecord(q.Name, target, mb.Endpoint.Port()), host, txtRecord(q.Name, mb))
	}
	if len(m.Answer) == 0 {
		negative(m, zone, dns.RcodeSuccess) // NODATA
	}
}

// published returns the members that have an endpoint, without repeated
// keys, in the order Members gave them.
func (s *Server) published() []Member {
	all := s.Members()
	out := make([]Member, 0, len(all))
	seen := make(map[peerbook.Key]bool, len(all))
	for _, mb := range all {
		if seen[mb.PublicKey] {
			continue
		}
		seen[mb.PublicKey] = true
		if mb.published() {
			if lan := s.announced(mb.PublicKey); lan != nil {
				mb.LAN = lan
			}
			out = append(out, mb)
		}
	}
	return out
}

func header(name string, rrtype uint16) dns.RR_Header {
	// TTL 0: endpoints behind a NAT change without notice, and a cached
	// one is worse than asking again.
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 0}
}

func srvRecord(name, target string, port uint16) *dns.SRV {
	return &dns.SRV{Hdr: header(name, dns.TypeSRV), Priority: 0, Weight: 0, Port: port, Target: target}
}

// hostRecord is the A or AAAA record of an endpoint address, by its
// family (an IPv4-mapped IPv6 address is IPv4).
func hostRecord(name string, a netip.Addr) dns.RR {
	a = a.Unmap()
	if a.Is4() {
		return &dns.A{Hdr: header(name, dns.TypeA), A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: header(name, dns.TypeAAAA), AAAA: a.AsSlice()}
}

// txtRecord holds txtvers=1, pub=KEY, allowed=CIDR,CIDR,... and, when
// the member announced any, lan=ADDR:PORT,... in that order. A character-string holds at most 255 bytes, so a list longer
// than that continues in further allowed= strings, split at commas.
func txtRecord(name string, mb *Member) *dns.TXT {
	txt := []string{"txtvers=1", "pub=" + mb.PublicKey.String()}
	const key = "allowed="
	cur := key
	for _, p := range mb.AllowedIPs {
		s := p.String()
		switch {
		case cur == key:
			cur += s
		case len(cur)+1+len(s) <= txtMax:
			cur += "," + s
		default:
			txt = append(txt, cur)
			cur = key + s
		}
	}
	txt = append(txt, cur)
	if len(mb.LAN) > 0 {
		txt = append(txt, lanStrings(mb.LAN)...)
	}
	return &dns.TXT{Hdr: header(name, dns.TypeTXT), Txt: txt}
}

// negative sets rcode with the zone's SOA in the authority section
// (RFC 2308), so that NXDOMAIN and NODATA are told apart.
func negative(m *dns.Msg, zone string, rcode int) {
	m.Rcode = rcode
	m.Ns = append(m.Ns, soaRecord(zone))
}

func soaRecord(zone string) *dns.SOA {
	return &dns.SOA{
		Hdr:     header(zone, dns.TypeSOA),
		Ns:      zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  0, // negative answers are not cached either
	}
}
