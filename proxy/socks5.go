package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// SOCKS5 protocol constants (RFC 1928, RFC 1929).
const (
	socksVersion = 5

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xff

	userPassVersion = 1

	cmdConnect      = 1
	cmdBind         = 2
	cmdUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// SOCKS5 reply codes.
const (
	repSucceeded          = 0x00
	repGeneralFailure     = 0x01
	repNotAllowed         = 0x02
	repNetworkUnreachable = 0x03
	repHostUnreachable    = 0x04
	repConnectionRefused  = 0x05
	repCommandUnsupported = 0x07
	repAddressUnsupported = 0x08
)

// SOCKS5 is a SOCKS version 5 server (RFC 1928) for the mesh: CONNECT and
// UDP ASSOCIATE, without or with username/password authentication (RFC
// 1929). BIND is not supported. Set the fields, then call Serve; the fields
// must not change afterwards.
type SOCKS5 struct {
	// Dialer opens TCP and UDP connections into the mesh. Required.
	Dialer Dialer
	// Book returns the current peer book. Required.
	Book Book
	// Auth, when set, requires username/password authentication (method
	// 0x02) with one of these users; nil offers no authentication (method
	// 0x00) and suits a loopback listener only (see CheckListen).
	Auth *Credentials
	// Allow lists destinations allowed beyond members' addresses and
	// subnets. Empty allows only the mesh.
	Allow []netip.Prefix
	// Exit, when set, reports whether the node sends traffic outside the
	// mesh through an exit member now (node.Node.ExitActive). While it
	// does, addresses outside the mesh are allowed too, and names outside
	// the mesh's namespace (with a dot, not under the mesh domain) are
	// resolved with Resolver; member names and names under the mesh
	// domain never leave the book. Nil: only the mesh and Allow.
	Exit func() bool
	// Resolver resolves those names. Nil: net.DefaultResolver, this
	// host's resolver; the query leaves from this host, not through the
	// exit member.
	Resolver Resolver
	// PacketListener opens the UDP relay socket of a UDP ASSOCIATE; it is
	// called with network "udp" and "IP:0", where IP is the address the
	// client reached the TCP listener on. Nil means net.ListenPacket.
	PacketListener func(network, address string) (net.PacketConn, error)
	// Logger receives connection logs, at debug level for each connection
	// and warn for failures. Nil discards them. Passwords are never logged.
	// Failed handshakes (wrong passwords included) and refusals over the
	// limits below are logged at most once per 10 s each.
	Logger *slog.Logger
	// Conns bounds the client connections held at once (each CONNECT and
	// each UDP ASSOCIATE's control connection); one over them is closed
	// at once. Zero: DefaultConnLimits.
	Conns Limits
	// Associations bounds the UDP ASSOCIATEs held at once; over them a
	// request gets reply 0x01 (general failure). Zero:
	// DefaultAssociationLimits. Each association talks to at most 256
	// destinations at once, all of one client's to 512 and all of them
	// together to 1024; datagrams to more are dropped.
	Associations Limits

	t       tracker
	once    sync.Once
	assocs  *netutil.Counter // UDP associations per client address
	dests   *netutil.Counter // destinations of all associations
	refused *netutil.RateLog // limits reached
	failed  *netutil.RateLog // handshakes that failed, authentication included
}

// Limits bound what a proxy's clients hold at once, per client address
// (source IP) and in total. A field of 0 or less means no limit; a
// Limits that is all zero means the default of the field it is in.
type Limits struct {
	Total     int
	PerClient int
}

// Defaults of the SOCKS5 limits. Every UDP destination holds a 64 KiB
// receive buffer (a datagram may be that large), so udpDestinationLimits
// bounds the memory of all associations together to about 64 MiB.
var (
	DefaultConnLimits        = Limits{Total: 1024, PerClient: 256}
	DefaultAssociationLimits = Limits{Total: 64, PerClient: 16}
)

// UDP destinations of all associations together, and of one client's.
var udpDestinationLimits = netutil.Limits{Total: 1024, PerClient: 512}

func (l Limits) orDefault(d Limits) netutil.Limits {
	if l == (Limits{}) {
		l = d
	}
	return netutil.Limits(l)
}

func (s *SOCKS5) init() {
	s.once.Do(func() {
		s.assocs = netutil.NewCounter(s.Associations.orDefault(DefaultAssociationLimits))
		s.dests = netutil.NewCounter(udpDestinationLimits)
		s.refused = netutil.NewRateLog(s.log(), 0)
		s.failed = netutil.NewRateLog(s.log(), 0)
	})
}

// Serve accepts SOCKS5 clients on ln until Close, then returns nil. It
// owns ln and closes it. Serve may be called for several listeners.
func (s *SOCKS5) Serve(ln net.Listener) error {
	if s.Dialer == nil || s.Book == nil {
		ln.Close()
		return errors.New("socks5: Dialer and Book are required")
	}
	s.init()
	ln = netutil.LimitListener(ln, s.Conns.orDefault(DefaultConnLimits), s.refused)
	return s.t.serve(ln, s.log(), "socks5", s.handle)
}

// Close stops every Serve, closes all client connections, relay sockets and
// connections into the mesh, and waits for their goroutines. The first call
// returns nil; later calls return an error wrapping net.ErrClosed.
func (s *SOCKS5) Close() error {
	if !s.t.close() {
		return fmt.Errorf("socks5: close: %w", net.ErrClosed)
	}
	return nil
}

func (s *SOCKS5) log() *slog.Logger { return netutil.OrDiscard(s.Logger) }

// socksError is a failed request: the reply code to send and why.
type socksError struct {
	rep byte
	err error
}

func (e *socksError) Error() string { return e.err.Error() }
func (e *socksError) Unwrap() error { return e.err }

func (s *SOCKS5) handle(c net.Conn) {
	log := s.log().With("client", netutil.AddrString(c.RemoteAddr()))
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	user, err := s.negotiate(c)
	if err != nil {
		// Any client that connects can fail a handshake: a flood of them
		// costs a line per 10 s.
		s.init()
		s.failed.Log("socks5 handshake failed", "client", netutil.AddrString(c.RemoteAddr()), "err", err)
		return
	}
	if user != "" {
		log = log.With("user", user)
	}
	cmd, host, port, err := readRequest(c)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			writeReply(c, se.rep, netip.AddrPort{})
		}
		log.Warn("socks5 request refused", "err", err)
		return
	}
	switch cmd {
	case cmdConnect:
		s.connect(c, log, host, port)
	case cmdUDPAssociate:
		s.associate(c, log, host, port)
	}
}

// negotiate runs method selection and, when Auth is set, the
// username/password subnegotiation. It returns the authenticated user.
func (s *SOCKS5) negotiate(c net.Conn) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return "", fmt.Errorf("not a SOCKS5 client (version %d)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", fmt.Errorf("read methods: %w", err)
	}
	want := byte(methodNoAuth)
	if s.Auth != nil {
		want = methodUserPass
	}
	found := false
	for _, m := range methods {
		found = found || m == want
	}
	if !found {
		c.Write([]byte{socksVersion, methodNoAcceptable})
		if want == methodUserPass {
			return "", errors.New("client does not offer username/password authentication")
		}
		return "", errors.New("client offers no method without authentication")
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return "", fmt.Errorf("write method: %w", err)
	}
	if want == methodNoAuth {
		return "", nil
	}
	// RFC 1929: VER ULEN UNAME PLEN PASSWD.
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	if hdr[0] != userPassVersion {
		return "", fmt.Errorf("unknown username/password version %d", hdr[0])
	}
	user := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, user); err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	var plen [1]byte
	if _, err := io.ReadFull(c, plen[:]); err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	pass := make([]byte, plen[0])
	if _, err := io.ReadFull(c, pass); err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	if !s.Auth.Valid(string(user), string(pass)) {
		c.Write([]byte{userPassVersion, 0x01})
		return "", fmt.Errorf("authentication failed for user %q", user)
	}
	if _, err := c.Write([]byte{userPassVersion, 0x00}); err != nil {
		return "", fmt.Errorf("write auth status: %w", err)
	}
	return string(user), nil
}

// readRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT. host is an IP
// literal or a name.
func readRequest(c net.Conn) (cmd byte, host string, port uint16, err error) {
	var hdr [3]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, "", 0, fmt.Errorf("read request: %w", err)
	}
	if hdr[0] != socksVersion {
		return 0, "", 0, fmt.Errorf("request version %d", hdr[0])
	}
	host, port, err = readAddr(c)
	if err != nil {
		return 0, "", 0, err
	}
	switch hdr[1] {
	case cmdConnect, cmdUDPAssociate:
		return hdr[1], host, port, nil
	}
	return 0, "", 0, &socksError{repCommandUnsupported, fmt.Errorf("command %d not supported", hdr[1])}
}

// readAddr reads ATYP DST.ADDR DST.PORT.
func readAddr(r io.Reader) (string, uint16, error) {
	var atyp [1]byte
	if _, err := io.ReadFull(r, atyp[:]); err != nil {
		return "", 0, fmt.Errorf("read address: %w", err)
	}
	var host string
	switch atyp[0] {
	case atypIPv4, atypIPv6:
		b := make([]byte, 4)
		if atyp[0] == atypIPv6 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(r, b); err != nil {
			return "", 0, fmt.Errorf("read address: %w", err)
		}
		ip, _ := netip.AddrFromSlice(b)
		host = ip.String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return "", 0, fmt.Errorf("read address: %w", err)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return "", 0, fmt.Errorf("read address: %w", err)
		}
		host = string(b)
	default:
		return "", 0, &socksError{repAddressUnsupported, fmt.Errorf("address type %d not supported", atyp[0])}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return "", 0, fmt.Errorf("read port: %w", err)
	}
	return host, binary.BigEndian.Uint16(p[:]), nil
}

// appendAddr appends ATYP ADDR PORT for ap; an invalid ap is 0.0.0.0:0.
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is6():
		b = append(b, atypIPv6)
		b = append(b, ip.AsSlice()...)
	case ip.Is4():
		b = append(b, atypIPv4)
		b = append(b, ip.AsSlice()...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func writeReply(c net.Conn, rep byte, bound netip.AddrPort) error {
	_, err := c.Write(appendAddr([]byte{socksVersion, rep, 0}, bound))
	return err
}

// addrPortOf converts a net.Addr of a TCP or UDP socket.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

// dialReply maps a dial error to a SOCKS5 reply code.
func dialReply(err error) byte {
	if errIsRefused(err) {
		return repConnectionRefused
	}
	switch network, host := errIsUnreachable(err); {
	case network:
		return repNetworkUnreachable
	case host:
		return repHostUnreachable
	}
	return repGeneralFailure
}

func refusalReply(err error) byte {
	var r *refusal
	if errors.As(err, &r) && r.notMember {
		return repHostUnreachable
	}
	return repNotAllowed
}

func (s *SOCKS5) connect(c net.Conn, log *slog.Logger, host string, port uint16) {
	dst, err := routeOf(s.Book, s.Allow, s.Exit, s.Resolver).destination(s.t.context(), host, port)
	if err != nil {
		writeReply(c, refusalReply(err), netip.AddrPort{})
		log.Warn("socks5 connect refused", "target", net.JoinHostPort(host, fmt.Sprint(port)), "err", err)
		return
	}
	log = log.With("target", dst.String())
	ctx, cancel := context.WithTimeout(s.t.context(), dialTimeout)
	up, err := s.Dialer.Dial(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		writeReply(c, dialReply(err), netip.AddrPort{})
		log.Warn("socks5 connect failed", "err", err)
		return
	}
	if !s.t.track(up) {
		up.Close()
		return
	}
	defer s.t.release(up)
	if err := writeReply(c, repSucceeded, addrPortOf(up.LocalAddr())); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	start := time.Now()
	log.Debug("socks5 connect")
	sent, received, err := netutil.Join(c, up)
	log.Debug("socks5 connection closed", "sent", sent, "received", received,
		"duration", time.Since(start).Round(time.Millisecond), "err", err)
}
