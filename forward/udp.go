package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// DefaultUDPIdle is how long a UDP session lives without traffic in either
// direction when ServeUDP is given an idle of 0.
const DefaultUDPIdle = 60 * time.Second

const (
	// maxUDPSessions bounds the clients relayed at once; each holds a dialed
	// conn, two goroutines and a receive buffer.
	maxUDPSessions = 1024
	// maxUDPSessionsPerClient bounds the sessions of one client address:
	// every source port is a session, and one host has 64 Ki of them.
	maxUDPSessionsPerClient = 256
	// udpQueueLen datagrams may wait for a session's dial or a slow write
	// before newer ones are dropped, as a full socket buffer would.
	udpQueueLen = 64
	// maxDatagram is the largest UDP payload, so nothing is truncated.
	maxDatagram = 64 << 10
)

// ServeUDP relays datagrams arriving on pc to target. Each client address
// gets its own session: a "udp" conn to target dialed through d, whose
// replies are sent back to that client from pc. A session ends after idle
// without traffic in either direction (DefaultUDPIdle if idle is 0), or when
// its conn fails; the client's next datagram starts a new one. At most 1024
// sessions run at once, 256 per client address (a session is an address
// and port); datagrams that would start more are dropped, and logged at
// most once per 10 s.
//
// ServeUDP owns pc. It returns nil when ctx is cancelled or pc is closed
// (ReadFrom reports net.ErrClosed), and an error wrapping any other read
// failure that is not temporary. Before returning it closes pc and every
// session and waits for its goroutines.
//
// Messages go to log (nil discards); label it with the flag, e.g.
// log.With("spec", spec.String()).
func ServeUDP(ctx context.Context, pc net.PacketConn, d Dialer, target string, idle time.Duration, log *slog.Logger) error {
	return newUDPServer(d, target, idle, maxUDPSessions, log).serve(ctx, pc)
}

type udpServer struct {
	dialer      Dialer
	target      string
	idle        time.Duration
	maxSessions int
	log         *slog.Logger
	perClient   *netutil.Counter // sessions per client address
	refused     *netutil.RateLog
	epoch       time.Time // sessions store their last activity relative to it

	wg sync.WaitGroup

	mu       sync.Mutex
	sessions map[udpKey]*udpSession
	closed   bool // no new sessions may start
}

// udpKey identifies a client. Addresses other than *net.UDPAddr fall back to
// their string form.
type udpKey struct {
	ap  netip.AddrPort
	str string
}

func keyOf(a net.Addr) udpKey {
	if ua, ok := a.(*net.UDPAddr); ok {
		return udpKey{ap: ua.AddrPort()}
	}
	return udpKey{str: a.Network() + " " + a.String()}
}

type udpSession struct {
	key    udpKey
	ip     netip.Addr // the client's, as counted in udpServer.perClient
	client net.Addr
	queue  chan []byte   // datagrams from the client, never closed
	done   chan struct{} // closed when the session ends
	last   atomic.Int64  // last activity, nanoseconds since udpServer.epoch

	mu     sync.Mutex
	conn   net.Conn // to the target; nil until dialed
	ended  bool
	endNow sync.Once
}

func newUDPServer(d Dialer, target string, idle time.Duration, maxSessions int, log *slog.Logger) *udpServer {
	if idle <= 0 {
		idle = DefaultUDPIdle
	}
	return &udpServer{
		dialer:      d,
		target:      target,
		idle:        idle,
		maxSessions: maxSessions,
		log:         netutil.OrDiscard(log),
		perClient:   netutil.NewCounter(netutil.Limits{PerClient: maxUDPSessionsPerClient}),
		refused:     netutil.NewRateLog(log, 0),
		epoch:       time.Now(),
		sessions:    make(map[udpKey]*udpSession),
	}
}

func (s *udpServer) serve(ctx context.Context, pc net.PacketConn) error {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer func() {
		stop()
		cancel()
		pc.Close()
		s.closeAll()
		s.wg.Wait()
	}()

	s.wg.Go(func() { s.expireIdle(ctx) })

	buf := make([]byte, maxDatagram)
	var backoff time.Duration
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !netutil.Temporary(err) {
				return fmt.Errorf("read: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			s.log.Warn("read failed, retrying", "err", err, "retry_in", backoff)
			if !netutil.Sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		ss := s.session(ctx, pc, addr)
		if ss == nil {
			continue
		}
		select {
		case ss.queue <- bytes.Clone(buf[:n]):
			s.touch(ss)
		default:
			s.log.Debug("udp session queue full, dropping datagram", "client", addr.String(), "size", n)
		}
	}
}

// session returns the client's session, starting one if there is room.
func (s *udpServer) session(ctx context.Context, pc net.PacketConn, client net.Addr) *udpSession {
	key := keyOf(client)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[key]; ss != nil {
		return ss
	}
	if s.closed {
		return nil
	}
	if len(s.sessions) >= s.maxSessions {
		s.refused.Log("too many udp sessions, dropping datagram from new client",
			"client", client.String(), "max", s.maxSessions)
		return nil
	}
	ip := netutil.ClientIP(client)
	if err := s.perClient.Acquire(ip); err != nil {
		s.refused.Log("too many udp sessions of one client, dropping datagram",
			"client", client.String(), "reason", err.Error())
		return nil
	}
	ss := &udpSession{
		key:    key,
		ip:     ip,
		client: client,
		queue:  make(chan []byte, udpQueueLen),
		done:   make(chan struct{}),
	}
	s.touch(ss)
	s.sessions[key] = ss
	s.wg.Go(func() { s.run(ctx, pc, ss) })
	return ss
}

// run dials the target, starts the reply reader and writes the client's
// datagrams until the session ends. Dialing here, not in the read loop,
// keeps one slow dial from stalling every other client.
func (s *udpServer) run(ctx context.Context, pc net.PacketConn, ss *udpSession) {
	defer s.end(ss)
	log := s.log.With("client", ss.client.String())

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := s.dialer.DialContext(dctx, "udp", s.target)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("dial failed, dropping udp session", "target", s.target, "err", err)
		}
		return
	}
	if !ss.setConn(conn) {
		conn.Close()
		return
	}
	log.Debug("udp session opened", "target", s.target)
	s.wg.Go(func() { s.replies(pc, ss, conn) })

	for {
		select {
		case <-ss.done:
			return
		case p := <-ss.queue:
			if _, err := conn.Write(p); err != nil {
				log.Debug("udp session closed: write failed", "err", err)
				return
			}
		}
	}
}

// replies sends what the target answers back to the client.
func (s *udpServer) replies(pc net.PacketConn, ss *udpSession, conn net.Conn) {
	defer s.end(ss)
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			select {
			case <-ss.done:
			default:
				s.log.Debug("udp session closed: read failed", "client", ss.client.String(), "err", err)
			}
			return
		}
		s.touch(ss)
		if _, err := pc.WriteTo(buf[:n], ss.client); err != nil {
			s.log.Debug("udp reply not delivered", "client", ss.client.String(), "err", err)
		}
	}
}

// expireIdle ends sessions without traffic for s.idle, checking twice per
// period so a session lives between idle and 1.5×idle.
func (s *udpServer) expireIdle(ctx context.Context) {
	t := time.NewTicker(max(s.idle/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := int64(time.Since(s.epoch) - s.idle)
		var idle []*udpSession
		s.mu.Lock()
		for _, ss := range s.sessions {
			if ss.last.Load() <= cutoff {
				idle = append(idle, ss)
			}
		}
		s.mu.Unlock()
		for _, ss := range idle {
			s.log.Debug("udp session expired", "client", ss.client.String(), "idle", s.idle)
			s.end(ss)
		}
	}
}

func (s *udpServer) touch(ss *udpSession) {
	ss.last.Store(int64(time.Since(s.epoch)))
}

// end removes the session and closes its conn, which stops its goroutines.
// It may be called any number of times, from any goroutine.
func (s *udpServer) end(ss *udpSession) {
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
		s.perClient.Release(ss.ip)
	}
	s.mu.Unlock()
	ss.end()
}

func (s *udpServer) closeAll() {
	s.mu.Lock()
	s.closed = true
	all := s.sessions
	s.sessions = make(map[udpKey]*udpSession)
	s.mu.Unlock()
	for _, ss := range all {
		ss.end()
	}
}

// sessionCount reports the live sessions, for tests.
func (s *udpServer) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// setConn records the dialed conn, or reports false if the session ended
// during the dial.
func (ss *udpSession) setConn(c net.Conn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return false
	}
	ss.conn = c
	return true
}

func (ss *udpSession) end() {
	ss.endNow.Do(func() {
		close(ss.done)
		ss.mu.Lock()
		ss.ended = true
		if ss.conn != nil {
			ss.conn.Close()
		}
		ss.mu.Unlock()
	})
}
