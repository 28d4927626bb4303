package peerbook

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// validLabel reports whether s is a DNS label (RFC 1123): 1 to 63 letters,
// digits and hyphens, not starting or ending with a hyphen. Member names
// must be labels because they are served as NAME.DOMAIN.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validDomain reports whether s is a DNS name of one or more labels.
func validDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

// validHostname is validDomain that also accepts a final dot and refuses
// names whose last label is numeric, which are mistyped IPv4 addresses
// ("1.2.3.400") rather than names.
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if !validDomain(s) {
		return false
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return true
		}
	}
	return false
}

// controlChar returns the first control character in s. Decoded TOML
// strings can hold them through escapes ("\n"), and a newline in a value is
// how a UAPI or wg-quick config gets extra lines injected.
func controlChar(s string) (rune, bool) {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return r, true
		}
	}
	return 0, false
}

// ParseEndpoint parses "host:port" where host is an IP literal (IPv6 in
// brackets) or a DNS hostname. It refuses schemes, paths, spaces, zones and
// control characters.
func ParseEndpoint(s string) (Endpoint, error) {
	if r, ok := controlChar(s); ok {
		return Endpoint{}, fmt.Errorf("endpoint %q contains control character %U; an endpoint is host:port and nothing else", s, r)
	}
	if s == "" {
		return Endpoint{}, fmt.Errorf("endpoint is empty; remove the key if the member has no public endpoint")
	}
	if i := strings.Index(s, "://"); i >= 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q must not have a scheme; write host:port, e.g. %q", s, stripURL(s[i+3:]))
	}
	if strings.ContainsAny(s, "/") {
		return Endpoint{}, fmt.Errorf("endpoint %q must not have a path; write host:port, e.g. %q", s, stripURL(s))
	}
	if strings.ContainsAny(s, " \t") {
		return Endpoint{}, fmt.Errorf("endpoint %q contains a space; write host:port", s)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return endpointFromAddr(s, ap.Addr(), ap.Port())
	}

	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if ip, perr := netip.ParseAddr(s); perr == nil && ip.Is6() {
			// "fd00::1:51820" parses as a bare address, hence the guess.
			return Endpoint{}, fmt.Errorf("endpoint %q is ambiguous or has no port: IPv6 endpoints need brackets, e.g. %q", s, "["+s+"]:51820")
		}
		if strings.Contains(err.Error(), "missing port") {
			return Endpoint{}, fmt.Errorf("endpoint %q has no port; write host:port, e.g. %q", s, strings.Trim(s, "[]")+":51820")
		}
		if strings.Contains(err.Error(), "too many colons") {
			example := "[fd42::1]:51820"
			i := strings.LastIndexByte(s, ':')
			if ip, perr := netip.ParseAddr(s[:i]); perr == nil && ip.Is6() {
				example = "[" + s[:i] + "]" + s[i:]
			}
			return Endpoint{}, fmt.Errorf("endpoint %q is not host:port: IPv6 addresses need brackets, e.g. %q", s, example)
		}
		return Endpoint{}, fmt.Errorf("endpoint %q is not host:port", s)
	}
	p, ok := parsePort(port)
	if !ok {
		return Endpoint{}, fmt.Errorf("endpoint %q: port %q must be a number between 1 and 65535", s, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if strings.HasPrefix(s, "[") != ip.Is6() {
			return Endpoint{}, fmt.Errorf("endpoint %q: only IPv6 addresses go in brackets", s)
		}
		return endpointFromAddr(s, ip, p)
	}
	if strings.HasPrefix(s, "[") {
		return Endpoint{}, fmt.Errorf("endpoint %q: only IPv6 addresses go in brackets, and %q is not one", s, host)
	}
	if !validHostname(host) {
		return Endpoint{}, fmt.Errorf("endpoint %q: %q is neither an IP address nor a valid hostname", s, host)
	}
	return Endpoint{Host: host, Port: p}, nil
}

func endpointFromAddr(s string, ip netip.Addr, port uint16) (Endpoint, error) {
	switch {
	case ip.Zone() != "":
		return Endpoint{}, fmt.Errorf("endpoint %q has an IPv6 zone, which only means something on one machine; use a global address", s)
	case ip.Is4In6():
		return Endpoint{}, fmt.Errorf("endpoint %q is an IPv4-mapped IPv6 address; write it as %q", s, netip.AddrPortFrom(ip.Unmap(), port).String())
	case ip.IsUnspecified():
		return Endpoint{}, fmt.Errorf("endpoint %q is the unspecified address; give the address the member is reachable at", s)
	case port == 0:
		return Endpoint{}, fmt.Errorf("endpoint %q: port must be between 1 and 65535", s)
	}
	return Endpoint{Host: ip.String(), Port: port}, nil
}

func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// stripURL cuts a path off a host:port for a suggestion.
func stripURL(s string) string {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "host:51820"
	}
	return s
}
