package forward

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// Flag names, as they appear in Spec.Flag and in error messages.
const (
	FlagForward = "--forward"
	FlagExpose  = "--expose"
)

// Spec is one parsed --forward or --expose value.
type Spec struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Listen is where the listener binds: "HOST:PORT" for --forward (IPv6
	// hosts in brackets), ":PORT" for --expose, whose listener binds the
	// node's mesh addresses.
	Listen string
	// Target is the "HOST:PORT" that connections are relayed to. For
	// --forward HOST names a mesh member (beta, beta.mesh) or an address; for
	// --expose it is usually a loopback address on the host.
	Target string
	// Flag is FlagForward or FlagExpose, for messages.
	Flag string
	// Raw is the value exactly as given on the command line.
	Raw string
}

// TargetHost returns the host part of Target, without brackets, so the caller
// can check that it names a known member or address.
func (s Spec) TargetHost() string {
	host, _, err := net.SplitHostPort(s.Target)
	if err != nil {
		return ""
	}
	return host
}

// Loopback reports whether a --forward listens on a loopback address
// (127.0.0.0/8, ::1, "localhost") only, so that only programs on this
// host can use it.
func (s Spec) Loopback() bool {
	host, _, err := net.SplitHostPort(s.Listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// String returns the flag and its value in canonical form, e.g.
// "--forward tcp:127.0.0.1:8080=beta:80"; use it to label logs and errors.
func (s Spec) String() string {
	listen := s.Listen
	if s.Flag == FlagExpose {
		listen = strings.TrimPrefix(listen, ":")
	}
	return s.Flag + " " + s.Proto + ":" + listen + "=" + s.Target
}

// ParseForward parses a --forward value, PROTO:HOST:PORT=TARGET_HOST:TARGET_PORT,
// e.g. "tcp:127.0.0.1:8080=beta:80" or "udp:[::1]:5353=10.42.0.3:53".
// The listen host is required: a forward never binds all interfaces by
// accident. Ports are 1 to 65535.
func ParseForward(s string) (Spec, error) {
	return parse(FlagForward, s)
}

// ParseExpose parses an --expose value, PROTO:PORT=TARGET_HOST:TARGET_PORT,
// e.g. "tcp:22=127.0.0.1:22". PORT is a port on the node's mesh addresses.
func ParseExpose(s string) (Spec, error) {
	return parse(FlagExpose, s)
}

// specError formats a parse error: the flag, the quoted value, what is wrong,
// and an example of the right form for the protocol at hand.
type specError struct {
	flag, raw, proto, msg string
}

func (e *specError) Error() string {
	return fmt.Sprintf("%s %q: %s, e.g. %s", e.flag, e.raw, e.msg, example(e.flag, e.proto))
}

func example(flag, proto string) string {
	switch {
	case flag == FlagExpose && proto == "udp":
		return "udp:53=127.0.0.1:5353"
	case flag == FlagExpose:
		return "tcp:22=127.0.0.1:22"
	case proto == "udp":
		return "udp:127.0.0.1:5353=beta:53"
	default:
		return "tcp:127.0.0.1:8080=beta:80"
	}
}

func parse(flag, raw string) (Spec, error) {
	fail := func(proto, format string, args ...any) (Spec, error) {
		return Spec{}, &specError{flag: flag, raw: raw, proto: proto, msg: fmt.Sprintf(format, args...)}
	}
	form := "PROTO:HOST:PORT=TARGET"
	if flag == FlagExpose {
		form = "PROTO:PORT=TARGET"
	}
	if raw == "" {
		return fail("", "empty value, want %s", form)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fail("", "must not contain spaces or control characters")
	}
	left, target, ok := strings.Cut(raw, "=")
	if !ok {
		return fail("", "missing =TARGET, want %s", form)
	}
	proto, listen, ok := strings.Cut(left, ":")
	if !ok {
		return fail("", "missing protocol, want %s", form)
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return fail("", "unknown protocol %q, want tcp or udp", proto)
	}

	spec := Spec{Proto: proto, Flag: flag, Raw: raw}
	if flag == FlagExpose {
		if strings.Contains(listen, ":") {
			return fail(proto, "mesh side takes only a PORT: the listener binds the node's mesh addresses")
		}
		port, err := parsePort(listen)
		if err != nil {
			return fail(proto, "mesh %v", err)
		}
		spec.Listen = ":" + port
	} else {
		// Port 0 lets the system choose a free port; the caller reports
		// the bound address (wgmesh up logs it in its ready line).
		host, port, err := splitHostPortZero(listen)
		if err != nil {
			return fail(proto, "listen %v", err)
		}
		spec.Listen = net.JoinHostPort(host, port)
	}

	host, port, err := splitHostPort(target)
	if err != nil {
		return fail(proto, "target %v", err)
	}
	spec.Target = net.JoinHostPort(host, port)
	return spec, nil
}

// splitHostPortZero is splitHostPort that also accepts port 0.
func splitHostPortZero(s string) (host, port string, err error) {
	if h, p, err := net.SplitHostPort(s); err == nil && p == "0" && h != "" && validHost(h) {
		return h, p, nil
	}
	return splitHostPort(s)
}

// splitHostPort splits and validates HOST:PORT. Its errors complete a
// sentence that starts with the role of the address ("listen ...").
func splitHostPort(s string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			return "", "", errors.New("address needs brackets around an IPv6 host, as [::1]:PORT")
		}
		return "", "", errors.New("address must be HOST:PORT")
	}
	if host == "" {
		return "", "", errors.New("address must be HOST:PORT")
	}
	if !validHost(host) {
		return "", "", fmt.Errorf("host %q is not an IP address or host name", host)
	}
	if port, err = parsePort(port); err != nil {
		return "", "", err
	}
	return host, port, nil
}

// parsePort returns the canonical decimal form of a port in 1..65535.
func parsePort(s string) (string, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("port %q must be a number from 1 to 65535", s)
	}
	return strconv.FormatUint(n, 10), nil
}

// validHost accepts IP addresses (IPv6 with an optional zone) and DNS-like
// names. A name whose last label is all digits is refused, so that a mistyped
// address such as 10.42.0.300 is not taken for a name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.ContainsFunc(last, func(r rune) bool { return r < '0' || r > '9' })
}
