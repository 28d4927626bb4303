package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// maxUDPHeader is the largest SOCKS5 UDP request header with an IP
	// address: RSV(2) FRAG(1) ATYP(1) IPv6(16) PORT(2).
	maxUDPHeader = 22
	// maxUDPSessions bounds the destinations one association may talk to
	// at the same time.
	maxUDPSessions = 256
	// udpIdle closes a destination socket that has neither sent nor
	// received for this long; a later datagram opens a new one.
	udpIdle = 2 * time.Minute
)

var udpBuffers = sync.Pool{New: func() any { b := make([]byte, maxUDPHeader+65535); return &b }}

// association is one UDP ASSOCIATE: a relay socket on the host that only
// the client may use, and one connected mesh socket per destination.
type association struct {
	s     *SOCKS5
	log   *slog.Logger
	relay net.PacketConn
	// clientIP is the control connection's source address; datagrams from
	// anywhere else are dropped. clientPort is the port the client
	// announced, or 0 until its first datagram fixes it.
	clientIP netip.Addr

	mu         sync.Mutex
	clientPort uint16
	sessions   map[netip.AddrPort]*udpSession
	closed     bool
}

type udpSession struct {
	dst      netip.AddrPort
	conn     net.Conn
	lastSend time.Time // under association.mu
	uncount  sync.Once // gives its place in SOCKS5.dests back
}

func (s *SOCKS5) associate(c net.Conn, log *slog.Logger, host string, port uint16) {
	local := addrPortOf(c.LocalAddr()).Addr().Unmap()
	clientIP := addrPortOf(c.RemoteAddr()).Addr().Unmap()
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() && ip.Unmap() != clientIP {
		// The relay is for the client only, whatever it announces.
		log.Debug("socks5 udp associate: ignoring announced address", "announced", host)
	}
	s.init()
	if err := s.assocs.Acquire(clientIP); err != nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		s.refused.Log("socks5 udp associate refused", "client", clientIP.String(), "reason", err.Error())
		return
	}
	defer s.assocs.Release(clientIP)
	listen := s.PacketListener
	if listen == nil {
		listen = net.ListenPacket
	}
	pc, err := listen("udp", netip.AddrPortFrom(local, 0).String())
	if err != nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		log.Warn("socks5 udp associate: open relay socket", "err", err)
		return
	}
	a := &association{
		s:          s,
		log:        log,
		relay:      pc,
		clientIP:   clientIP,
		clientPort: port,
		sessions:   make(map[netip.AddrPort]*udpSession),
	}
	if !s.t.goTracked(pc, a.readClient) {
		return
	}
	defer a.close()
	bound := addrPortOf(pc.LocalAddr())
	if err := writeReply(c, repSucceeded, bound); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	log.Debug("socks5 udp associate", "relay", bound.String())
	// The association lives as long as the control connection (RFC 1928
	// section 7); the client sends nothing more on it.
	io.Copy(io.Discard, c)
	log.Debug("socks5 udp associate ended")
}

func (a *association) close() {
	a.mu.Lock()
	a.closed = true
	sessions := a.sessions
	a.sessions = nil
	a.mu.Unlock()
	a.relay.Close()
	for _, sess := range sessions {
		sess.conn.Close()
	}
}

// readClient relays datagrams from the client to their destinations.
func (a *association) readClient() {
	bp := udpBuffers.Get().(*[]byte)
	defer udpBuffers.Put(bp)
	buf := *bp
	for {
		n, from, err := a.relay.ReadFrom(buf)
		if err != nil {
			return
		}
		src := addrPortOf(from)
		if !a.fromClient(src) {
			continue
		}
		host, port, payload, err := parseUDPRequest(buf[:n])
		if err != nil {
			a.log.Debug("socks5 udp: dropping datagram", "err", err)
			continue
		}
		// No lookups per datagram: outside names need an address here.
		rt := routeOf(a.s.Book, a.s.Allow, a.s.Exit, nil)
		rt.resolver = nil
		dst, err := rt.destination(context.Background(), host, port)
		if err != nil {
			a.log.Debug("socks5 udp: dropping datagram", "target", host, "err", err)
			continue
		}
		sess := a.session(dst)
		if sess == nil {
			continue
		}
		sess.conn.Write(payload)
	}
}

// fromClient reports whether a datagram from src belongs to the client,
// fixing the client's port on its first datagram if it announced none.
func (a *association) fromClient(src netip.AddrPort) bool {
	if src.Addr().Unmap() != a.clientIP {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clientPort == 0 {
		a.clientPort = src.Port()
	}
	return src.Port() == a.clientPort
}

func (a *association) client() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.clientIP, a.clientPort))
}

// session returns the mesh socket for dst, opening it if needed. It
// returns nil when the association is closing, full, or the dial fails.
func (a *association) session(dst netip.AddrPort) *udpSession {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	if sess, ok := a.sessions[dst]; ok {
		sess.lastSend = time.Now()
		a.mu.Unlock()
		return sess
	}
	if len(a.sessions) >= maxUDPSessions {
		a.mu.Unlock()
		a.s.refused.Log("socks5 udp: too many destinations, dropping datagram", "client", a.clientIP.String(), "target", dst.String(), "limit", maxUDPSessions)
		return nil
	}
	a.mu.Unlock()
	if err := a.s.dests.Acquire(a.clientIP); err != nil {
		a.s.refused.Log("socks5 udp: too many destinations in all associations, dropping datagram", "client", a.clientIP.String(), "target", dst.String(), "reason", err.Error())
		return nil
	}
	release := func() { a.s.dests.Release(a.clientIP) }

	// Dialing UDP sends nothing, so it does not block for long; it is
	// still bounded and aborted by Close.
	ctx, cancel := context.WithTimeout(a.s.t.context(), dialTimeout)
	conn, err := a.s.Dialer.Dial(ctx, "udp", dst.String())
	cancel()
	if err != nil {
		release()
		a.log.Warn("socks5 udp: dial failed", "target", dst.String(), "err", err)
		return nil
	}
	sess := &udpSession{dst: dst, conn: conn, lastSend: time.Now()}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		conn.Close()
		release()
		return nil
	}
	a.sessions[dst] = sess
	a.mu.Unlock()
	if !a.s.t.goTracked(conn, func() { a.readMesh(sess) }) {
		sess.uncount.Do(release)
		return nil
	}
	return sess
}

// readMesh relays replies from one destination back to the client, each
// with the SOCKS5 UDP header naming the destination as its source.
func (a *association) readMesh(sess *udpSession) {
	defer a.forget(sess)
	bp := udpBuffers.Get().(*[]byte)
	defer udpBuffers.Put(bp)
	buf := *bp
	hdr := appendAddr([]byte{0, 0, 0}, sess.dst)
	start := maxUDPHeader - len(hdr)
	copy(buf[start:], hdr)
	for {
		sess.conn.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := sess.conn.Read(buf[maxUDPHeader:])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && a.recentlyUsed(sess) {
				continue
			}
			return
		}
		if _, err := a.relay.WriteTo(buf[start:maxUDPHeader+n], a.client()); err != nil {
			return
		}
	}
}

func (a *association) recentlyUsed(sess *udpSession) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.closed && time.Since(sess.lastSend) < udpIdle
}

func (a *association) forget(sess *udpSession) {
	a.mu.Lock()
	if a.sessions[sess.dst] == sess {
		delete(a.sessions, sess.dst)
	}
	a.mu.Unlock()
	sess.conn.Close()
	sess.uncount.Do(func() { a.s.dests.Release(a.clientIP) })
}

// parseUDPRequest splits RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA.
// Fragments are not supported and are dropped, as RFC 1928 allows.
func parseUDPRequest(b []byte) (host string, port uint16, payload []byte, err error) {
	if len(b) < 4 {
		return "", 0, nil, errors.New("short datagram")
	}
	if b[2] != 0 {
		return "", 0, nil, errors.New("fragmented datagram")
	}
	r := bytes.NewReader(b[3:])
	host, port, err = readAddr(r)
	if err != nil {
		return "", 0, nil, err
	}
	return host, port, b[len(b)-r.Len():], nil
}
