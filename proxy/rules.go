package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Dialer opens connections into the mesh. The proxies call it with network
// "tcp" or "udp" and an address that is always IP:PORT, never a name: names
// are resolved against the book before the destination rules are checked.
// *node.Node satisfies it.
type Dialer interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// Book returns the peer book currently in force. It is called for every
// request, so it must be cheap and safe for concurrent use; *node.Node's
// Book method is such a func.
type Book func() *peerbook.Book

// refusal explains why a destination is not reached. It is returned before
// anything is dialed.
type refusal struct {
	notMember bool // a name in the mesh's namespace that no member has
	msg       string
}

func (r *refusal) Error() string { return r.msg }

// errNoBook is reported when the Book func returns nil.
var errNoBook = &refusal{msg: "no peer book loaded"}

// Resolver looks up names outside the mesh; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// route is what a proxy checks a destination against: the book, the
// extra allowed prefixes and whether an exit member carries everything
// outside the mesh now (then names outside the mesh's namespace are
// resolved with resolver, when it is set).
type route struct {
	book     *peerbook.Book
	allow    []netip.Prefix
	exit     bool
	resolver Resolver
}

// routeOf returns the route for one request.
func routeOf(book Book, allow []netip.Prefix, exit func() bool, r Resolver) route {
	rt := route{book: book(), allow: allow, exit: exit != nil && exit()}
	if rt.exit {
		rt.resolver = r
		if rt.resolver == nil {
			rt.resolver = net.DefaultResolver
		}
	}
	return rt
}

// destination resolves host (a member name or an IP literal) against the
// current book and checks it against the rules: members' addresses, the
// subnets they route, then allow. The error is a *refusal.
func destination(book *peerbook.Book, allow []netip.Prefix, host string, port uint16) (netip.AddrPort, error) {
	return route{book: book, allow: allow}.destination(context.Background(), host, port)
}

// resolveTimeout bounds the lookup of a name outside the mesh.
const resolveTimeout = 5 * time.Second

// destination is the package's destination, through an exit member too:
// then addresses outside the mesh pass, but not loopback, link-local or
// unspecified ones (the exit member would refuse them as its own host's),
// nor addresses in the mesh networks that no member has.
func (rt route) destination(ctx context.Context, host string, port uint16) (netip.AddrPort, error) {
	book := rt.book
	if book == nil {
		return netip.AddrPort{}, errNoBook
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ip, err = lookupName(book, host)
		var ref *refusal
		if err != nil && rt.resolver != nil && errors.As(err, &ref) && !ref.notMember {
			ip, err = rt.lookupOutside(ctx, host)
		}
		if err != nil {
			return netip.AddrPort{}, err
		}
	}
	if ip.Zone() != "" {
		return netip.AddrPort{}, &refusal{msg: fmt.Sprintf("%s: scoped addresses are not mesh destinations", host)}
	}
	ip = ip.Unmap()
	if allowed(book, rt.allow, ip) {
		return netip.AddrPortFrom(ip, port), nil
	}
	if !rt.exit {
		return netip.AddrPort{}, &refusal{msg: fmt.Sprintf("%s is neither a member's address nor in a member's subnet; to reach addresses outside the mesh, start wgmesh up with --exit-node NAME", ip)}
	}
	switch {
	case ip.IsLoopback(), ip.IsUnspecified(), ip.IsLinkLocalUnicast(), ip.IsMulticast():
		return netip.AddrPort{}, &refusal{msg: fmt.Sprintf("%s is a loopback, link-local, multicast or unspecified address, which the exit member does not forward", ip)}
	case slices.ContainsFunc(book.Mesh.Networks, func(p netip.Prefix) bool { return p.Contains(ip) }):
		return netip.AddrPort{}, &refusal{msg: fmt.Sprintf("%s is in the mesh networks but no member's address", ip)}
	}
	return netip.AddrPortFrom(ip, port), nil
}

// lookupOutside resolves a name outside the mesh's namespace, IPv4 first.
func (rt route) lookupOutside(ctx context.Context, name string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := rt.resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return netip.Addr{}, &refusal{notMember: true, msg: fmt.Sprintf("%q does not resolve: %v", name, err)}
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, &refusal{notMember: true, msg: fmt.Sprintf("%q has no addresses", name)}
	}
	return addrs[0], nil
}

// lookupName returns a member's first IPv4 address, else its first address.
// A name outside the mesh's namespace is refused as not allowed: without
// an exit member the proxies never ask the host's DNS (route.destination
// does, with one).
func lookupName(book *peerbook.Book, name string) (netip.Addr, error) {
	p, ok := book.PeerByName(name)
	if !ok {
		name = strings.TrimSuffix(name, ".")
		domain := book.Mesh.Domain
		if domain == "" {
			domain = peerbook.DefaultDomain
		}
		lower := strings.ToLower(name)
		if name != "" && (!strings.Contains(name, ".") || strings.HasSuffix(lower, "."+strings.ToLower(domain))) {
			return netip.Addr{}, &refusal{notMember: true, msg: fmt.Sprintf("no member named %q in the peer book", name)}
		}
		return netip.Addr{}, &refusal{msg: fmt.Sprintf("%q is not a member name; names outside .%s are not resolved", name, domain)}
	}
	for _, a := range p.Addresses {
		if a.Is4() {
			return a, nil
		}
	}
	if len(p.Addresses) > 0 {
		return p.Addresses[0], nil
	}
	return netip.Addr{}, &refusal{notMember: true, msg: fmt.Sprintf("member %q has no address", p.Name)}
}

func allowed(book *peerbook.Book, allow []netip.Prefix, ip netip.Addr) bool {
	for i := range book.Peers {
		p := &book.Peers[i]
		for _, a := range p.Addresses {
			if a.Unmap() == ip {
				return true
			}
		}
		for _, s := range p.Subnets {
			if s.Contains(ip) {
				return true
			}
		}
	}
	for _, a := range allow {
		if a.Contains(ip) {
			return true
		}
	}
	return false
}

// splitHostPort splits HOST:PORT, defaulting the port to def when the
// input has none (def 0 means a port is required).
func splitHostPort(hostport string, def uint16) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		if def == 0 {
			return "", 0, err
		}
		return hostport, def, nil
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("invalid port %q", portStr)
	}
	return host, uint16(port), nil
}

// CheckListen refuses to run the SOCKS5 proxy on a non-loopback address
// without authentication: anyone who can reach that address could use the
// proxy to enter the mesh. It is CheckListenFlag for --socks and
// --socks-auth-file.
func CheckListen(addr string, auth bool) error {
	return CheckListenFlag("--socks", "--socks-auth-file", addr, auth)
}

// CheckListenFlag refuses a proxy listen address that is not a loopback
// address (127.0.0.0/8, ::1 or "localhost") unless auth is set. flag and
// authFlag name the options in the message, e.g. "--http-proxy" and the
// flag that sets its credentials file.
func CheckListenFlag(flag, authFlag, addr string, auth bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %s: want HOST:PORT, e.g. 127.0.0.1:1080: %w", flag, addr, err)
	}
	if auth || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("%s %s without %s would let anyone on the network into the mesh; bind 127.0.0.1 or set %s", flag, addr, authFlag, authFlag)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// errIsRefused and friends classify dial errors for SOCKS5 replies. gVisor
// reports its errors as plain strings, hence the text matches.
func errIsRefused(err error) bool {
	return errors.Is(err, errConnRefused) || strings.Contains(err.Error(), "refused")
}

func errIsUnreachable(err error) (network bool, host bool) {
	s := err.Error()
	switch {
	case errors.Is(err, errNetUnreach) || strings.Contains(s, "network is unreachable"):
		return true, false
	case errors.Is(err, errHostUnreach) || strings.Contains(s, "no route to host"),
		errors.Is(err, context.DeadlineExceeded) || strings.Contains(s, "timed out"):
		return false, true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, true
	}
	return false, false
}
