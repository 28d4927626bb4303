package registry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/dnsserve"
	"github.com/wgmesh/wgmesh/peerbook"
)

// ErrNotFound is returned when the registry does not know a member or has
// no endpoint for it (NXDOMAIN, or no record of the asked type).
var ErrNotFound = errors.New("registry: not found")

// Exchanger sends one DNS query and returns the reply. Implementations
// must honour ctx's deadline and cancellation and return only a reply to
// m (same ID and question).
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// DefaultTimeout bounds an exchange whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// retransmit is how long DialExchanger waits for a UDP reply before it
// sends the query again; paths that are just being punched lose packets.
const retransmit = time.Second

// DialExchanger is an Exchanger that dials a DNS server, in the mesh or
// not. It asks over UDP first and again over TCP when the reply is
// truncated, so it works against a wgmesh registry as well as against
// CoreDNS with the wgsd plugin.
type DialExchanger struct {
	// Dial opens connections to Addr, "udp" first, "tcp" for truncated
	// replies: the node's Dial to reach a registry through the mesh. Nil
	// means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Addr is the server's host:port.
	Addr string
	// Timeout bounds one Exchange when ctx has no deadline; 0 means
	// DefaultTimeout.
	Timeout time.Duration
}

// Exchange implements Exchanger.
func (d DialExchanger) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		timeout := d.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	packed, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("registry: pack query: %w", err)
	}
	r, err := d.exchange(ctx, "udp", m, packed)
	if err != nil || !r.Truncated {
		return r, err
	}
	return d.exchange(ctx, "tcp", m, packed)
}

func (d DialExchanger) exchange(ctx context.Context, network string, m *dns.Msg, packed []byte) (*dns.Msg, error) {
	dial := d.Dial
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	conn, err := dial(ctx, network, d.Addr)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s: %w", network, d.Addr, err)
	}
	defer conn.Close()
	// Closing unblocks reads and writes at once; a deadline set by the
	// loop below could otherwise extend past a cancellation.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	deadline, _ := ctx.Deadline()
	var r *dns.Msg
	if network == "udp" {
		r, err = exchangeUDP(conn, m, packed, deadline)
	} else {
		r, err = exchangeTCP(conn, m, packed, deadline)
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case !time.Now().Before(deadline):
			// The socket's deadline is the context's; its timer may
			// not have fired yet.
			err = context.DeadlineExceeded
		}
		return nil, fmt.Errorf("registry: %s %s: %w", network, d.Addr, err)
	}
	return r, nil
}

// exchangeUDP sends the query, again every retransmit, until a reply to
// it arrives. Framing is done here rather than by dns.Conn, which guesses
// it from the connection's type: a mesh connection need not look like a
// net.PacketConn.
func exchangeUDP(conn net.Conn, m *dns.Msg, packed []byte, deadline time.Time) (*dns.Msg, error) {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		if _, err := conn.Write(packed); err != nil {
			return nil, err
		}
		wait := time.Now().Add(retransmit)
		if wait.After(deadline) {
			wait = deadline
		}
		conn.SetReadDeadline(wait)
		for {
			n, err := conn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
				break // send again
			}
			if err != nil {
				return nil, err
			}
			r := new(dns.Msg)
			if r.Unpack(buf[:n]) != nil || !isReply(m, r) {
				continue // garbage or a late reply to an earlier query
			}
			return r, nil
		}
	}
}

func exchangeTCP(conn net.Conn, m *dns.Msg, packed []byte, deadline time.Time) (*dns.Msg, error) {
	conn.SetDeadline(deadline)
	out := make([]byte, 2+len(packed))
	binary.BigEndian.PutUint16(out, uint16(len(packed)))
	copy(out[2:], packed)
	if _, err := conn.Write(out); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf); err != nil {
		return nil, fmt.Errorf("bad reply: %w", err)
	}
	if !isReply(m, r) {
		return nil, errors.New("reply does not match the query")
	}
	return r, nil
}

// isReply reports whether r answers m.
func isReply(m, r *dns.Msg) bool {
	if r.Id != m.Id || !r.Response || len(r.Question) != len(m.Question) {
		return false
	}
	for i, q := range m.Question {
		rq := r.Question[i]
		if !strings.EqualFold(rq.Name, q.Name) || rq.Qtype != q.Qtype || rq.Qclass != q.Qclass {
			return false
		}
	}
	return true
}

// Lookup asks the registry serving zone through ex for the endpoint it
// observes for key: an SRV query for the key's instance, with the address
// from the A or AAAA record in the additional section, or from an A then
// AAAA query on the SRV target when that is missing. It returns an error
// wrapping ErrNotFound if the registry has no endpoint for key.
func Lookup(ctx context.Context, ex Exchanger, zone string, key peerbook.Key) (netip.AddrPort, error) {
	r, err := ask(ctx, ex, InstanceName(zone, key), dns.TypeSRV)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return endpoint(ctx, ex, r)
}

// List asks the registry serving zone through ex for every member it
// publishes: a PTR query for the service, then SRV (with the address and
// TXT expected in the additional section, asked for separately if absent)
// for each instance. A member's key comes from its label; a pub= in its
// TXT that disagrees is an error. A registry without TXT records (older
// wgsd) gives members without AllowedIPs.
//
// Instances that vanish between the PTR and their SRV are left out. If
// some instances are malformed, List returns the others together with an
// error describing the malformed ones; a failed query returns no members.
func List(ctx context.Context, ex Exchanger, zone string) ([]Member, error) {
	zone = normalizeZone(zone)
	service := ServiceName(zone)
	r, err := ask(ctx, ex, service, dns.TypePTR)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // wgsd answers NXDOMAIN when it has no peers
	}
	if err != nil {
		return nil, err
	}
	var (
		out  []Member
		bad  []error
		seen = make(map[peerbook.Key]bool)
	)
	for _, rr := range r.Answer {
		ptr, ok := rr.(*dns.PTR)
		if !ok || !strings.EqualFold(ptr.Hdr.Name, service) {
			continue
		}
		k, ok := instanceKey(ptr.Ptr, zone)
		if !ok {
			bad = append(bad, fmt.Errorf("registry: %s: not an instance of %s", ptr.Ptr, service))
			continue
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		mb, err := readInstance(ctx, ex, ptr.Ptr, k)
		var fe *formatError
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case errors.As(err, &fe):
			bad = append(bad, err)
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, mb)
	}
	return out, errors.Join(bad...)
}

// readInstance reads one member's SRV, address and TXT.
func readInstance(ctx context.Context, ex Exchanger, name string, key peerbook.Key) (Member, error) {
	r, err := ask(ctx, ex, name, dns.TypeSRV)
	if err != nil {
		return Member{}, err
	}
	ep, err := endpoint(ctx, ex, r)
	if err != nil {
		return Member{}, err
	}
	mb := Member{PublicKey: key, Endpoint: ep}
	var txt *dns.TXT
	for _, rr := range r.Extra {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
			txt = t
			break
		}
	}
	if txt == nil {
		tr, err := ask(ctx, ex, name, dns.TypeTXT)
		switch {
		case errors.Is(err, ErrNotFound):
			return mb, nil
		case err != nil:
			return Member{}, err
		}
		for _, rr := range tr.Answer {
			if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
				txt = t
				break
			}
		}
		if txt == nil {
			return mb, nil
		}
	}
	mb.AllowedIPs, mb.LAN, err = parseTXT(txt.Txt, key)
	if err != nil {
		return Member{}, &formatError{name: name, err: err}
	}
	return mb, nil
}

// parseTXT reads allowed= from a txtvers=1 record and checks that pub=
// names key. Strings it does not know are ignored, as DNS-SD asks.
func parseTXT(txt []string, key peerbook.Key) ([]netip.Prefix, []netip.AddrPort, error) {
	var allowed []netip.Prefix
	var lan []netip.AddrPort
	for _, s := range txt {
		k, v, _ := strings.Cut(s, "=")
		switch strings.ToLower(k) {
		case "txtvers":
			if v != "1" {
				return nil, nil, nil // a format we do not know; the endpoint still holds
			}
		case "pub":
			pub, err := peerbook.ParseKey(v)
			if err != nil {
				return nil, nil, fmt.Errorf("pub: %w", err)
			}
			if pub != key {
				return nil, nil, fmt.Errorf("pub=%s does not match the label's key %s", pub.Short(), key.Short())
			}
		case "allowed":
			for c := range strings.SplitSeq(v, ",") {
				if c == "" {
					continue
				}
				p, err := netip.ParsePrefix(c)
				if err != nil {
					return nil, nil, fmt.Errorf("allowed: %w", err)
				}
				allowed = append(allowed, p)
			}
		case "lan":
			var err error
			if lan, err = parseLAN(v, lan); err != nil {
				return nil, nil, err
			}
		}
	}
	return allowed, lan, nil
}

// endpoint reads the endpoint from an SRV reply r.
func endpoint(ctx context.Context, ex Exchanger, r *dns.Msg) (netip.AddrPort, error) {
	name := r.Question[0].Name
	var srv *dns.SRV
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok && strings.EqualFold(s.Hdr.Name, name) {
			srv = s
			break
		}
	}
	if srv == nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s has no SRV record", ErrNotFound, name)
	}
	if srv.Port == 0 {
		return netip.AddrPort{}, &formatError{name: name, err: errors.New("SRV port is 0")}
	}
	addr, ok := hostAddr(r.Extra, srv.Target)
	if !ok {
		var err error
		if addr, err = resolve(ctx, ex, srv.Target); err != nil {
			return netip.AddrPort{}, err
		}
	}
	return netip.AddrPortFrom(addr, srv.Port), nil
}

// resolve asks for target's A record, then its AAAA.
func resolve(ctx context.Context, ex Exchanger, target string) (netip.Addr, error) {
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := ask(ctx, ex, target, qtype)
		if errors.Is(err, ErrNotFound) && qtype == dns.TypeA {
			continue // wgsd answers NXDOMAIN for the other family
		}
		if err != nil {
			return netip.Addr{}, err
		}
		if a, ok := hostAddr(r.Answer, target); ok {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s has no address", ErrNotFound, target)
}

// hostAddr returns the address of the first A or AAAA record of name in
// rrs.
func hostAddr(rrs []dns.RR, name string) (netip.Addr, bool) {
	for _, rr := range rrs {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A.To4()
		case *dns.AAAA:
			ip = rr.AAAA.To16()
		}
		if a, ok := netip.AddrFromSlice(ip); ok && !a.Unmap().IsUnspecified() {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// ask sends one query and returns the reply if its rcode is NOERROR; an
// NXDOMAIN is an error wrapping ErrNotFound.
func ask(ctx context.Context, ex Exchanger, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	// Room for a few dozen members before the TCP retry.
	m.SetEdns0(dnsserve.EDNSSize, false)
	r, err := ex.Exchange(ctx, m)
	if err != nil {
		return nil, err
	}
	if !isReply(m, r) {
		return nil, fmt.Errorf("registry: %s %s: reply does not match the query", name, dns.TypeToString[qtype])
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
		return r, nil
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%w: %s %s: NXDOMAIN", ErrNotFound, name, dns.TypeToString[qtype])
	default:
		return nil, fmt.Errorf("registry: %s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
	}
}

// formatError is a malformed record from the registry.
type formatError struct {
	name string
	err  error
}

func (e *formatError) Error() string { return "registry: " + e.name + ": " + e.err.Error() }
func (e *formatError) Unwrap() error { return e.err }
