package registry

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

// LAN candidates. A member announces its own underlay addresses (with its
// listen port) to a registry with a DNS UPDATE (RFC 2136) sent through the
// mesh: the zone section names the service, _wireguard._udp.ZONE, and the
// update section holds one TXT record at the member's instance name whose
// strings are lan=ADDR:PORT,... (an empty record withdraws them). The
// registry accepts it only from a mesh address of the member that the
// instance names (WireGuard's cryptokey routing vouches for the source),
// keeps it for LANTTL, and publishes the candidates in the member's TXT
// record; wgsd clients, which read only the SRV and address records,
// ignore them.

// lanKey starts a TXT string of LAN candidates.
const lanKey = "lan="

// maxLAN bounds the candidates kept for one member.
const maxLAN = 8

// Announce tells the registry serving zone through ex that key's LAN
// candidates are lan (empty withdraws them). The registry checks that the
// update comes from key's mesh address.
func Announce(ctx context.Context, ex Exchanger, zone string, key peerbook.Key, lan []netip.AddrPort) error {
	zone = normalizeZone(zone)
	m := new(dns.Msg)
	m.SetUpdate(ServiceName(zone))
	txt := &dns.TXT{Hdr: header(InstanceName(zone, key), dns.TypeTXT), Txt: lanStrings(lan)}
	m.Ns = append(m.Ns, txt)
	r, err := ex.Exchange(ctx, m)
	if err != nil {
		return err
	}
	if !isReply(m, r) {
		return fmt.Errorf("registry: announce: reply does not match the update")
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("registry: announce: %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}

// lanStrings is lan as TXT strings of at most txtMax bytes.
func lanStrings(lan []netip.AddrPort) []string {
	var out []string
	cur := ""
	for _, ap := range lan {
		s := ap.String()
		switch {
		case cur == "":
			cur = lanKey + s
		case len(cur)+1+len(s) <= txtMax:
			cur += "," + s
		default:
			out = append(out, cur)
			cur = lanKey + s
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	if out == nil {
		out = []string{lanKey}
	}
	return out
}

// parseLAN reads the candidates of one lan= value, keeping only those
// worth trying (see Usable).
func parseLAN(v string, out []netip.AddrPort) ([]netip.AddrPort, error) {
	for c := range strings.SplitSeq(v, ",") {
		if c == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(c)
		if err != nil {
			return out, fmt.Errorf("lan: %w", err)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if Usable(ap) && len(out) < maxLAN {
			out = append(out, ap)
		}
	}
	return out, nil
}

// Usable reports whether ap may be published or tried as a LAN candidate:
// a port, and an address that is not loopback, link-local, multicast or
// unspecified.
func Usable(ap netip.AddrPort) bool {
	a := ap.Addr()
	return ap.IsValid() && ap.Port() != 0 && !a.IsUnspecified() && !a.IsLoopback() &&
		!a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() && !a.IsMulticast() && !a.IsInterfaceLocalMulticast()
}

// update answers an announcement from the mesh address from.
func (s *Server) update(req *dns.Msg, from netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeRefused)
	zone := normalizeZone(s.Zone)
	if len(req.Question) != 1 || !strings.EqualFold(dns.Fqdn(req.Question[0].Name), ServiceName(zone)) {
		m.Rcode = dns.RcodeNotZone
		return m
	}
	if s.Owner == nil || !from.IsValid() || len(req.Ns) != 1 || len(req.Answer) != 0 {
		return m
	}
	txt, ok := req.Ns[0].(*dns.TXT)
	if !ok {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	k, ok := instanceKey(strings.ToLower(dns.Fqdn(txt.Hdr.Name)), zone)
	if !ok {
		m.Rcode = dns.RcodeNotZone
		return m
	}
	if owner, ok := s.Owner(from); !ok || owner != k {
		m.Rcode = dns.RcodeNotAuth
		s.log().Warn("refused a LAN announcement not from the member's mesh address", "from", from.String(), "member", k.Short())
		return m
	}
	var lan []netip.AddrPort
	for _, v := range txt.Txt {
		rest, ok := strings.CutPrefix(strings.ToLower(v), lanKey)
		if !ok {
			continue
		}
		var err error
		if lan, err = parseLAN(rest, lan); err != nil {
			m.Rcode = dns.RcodeFormatError
			return m
		}
	}
	s.lanMu.Lock()
	if s.lan == nil {
		s.lan = make(map[peerbook.Key]lanEntry)
	}
	if len(lan) == 0 {
		delete(s.lan, k)
	} else {
		s.lan[k] = lanEntry{addrs: lan, at: time.Now()}
	}
	s.lanMu.Unlock()
	s.log().Debug("LAN candidates announced", "member", k.Short(), "count", len(lan))
	m.Rcode = dns.RcodeSuccess
	return m
}

// ForgetLAN drops every announced LAN candidate (the mesh turned them
// off).
func (s *Server) ForgetLAN() {
	s.lanMu.Lock()
	clear(s.lan)
	s.lanMu.Unlock()
}

// announced returns k's LAN candidates, or nil when it announced none in
// the last LANTTL.
func (s *Server) announced(k peerbook.Key) []netip.AddrPort {
	s.lanMu.Lock()
	defer s.lanMu.Unlock()
	e, ok := s.lan[k]
	if !ok {
		return nil
	}
	if time.Since(e.at) > LANTTL {
		delete(s.lan, k)
		return nil
	}
	return e.addrs
}

// LookupMember is Lookup with the rest of what the registry publishes
// about key: its AllowedIPs and LAN candidates from the TXT record.
func LookupMember(ctx context.Context, ex Exchanger, zone string, key peerbook.Key) (Member, error) {
	return readInstance(ctx, ex, InstanceName(normalizeZone(zone), key), key)
}
