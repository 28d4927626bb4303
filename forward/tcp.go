package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// Dialer opens connections to a forward's target. *net.Dialer satisfies it
// for targets on the host; a netstack dialer satisfies it for targets in the
// mesh. ServeTCP dials network "tcp" and ServeUDP dials network "udp".
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

const (
	// dialTimeout bounds each dial to the target, so a dead target does not
	// pile up half-open client connections.
	dialTimeout      = 10 * time.Second
	maxAcceptBackoff = time.Second
)

// defaultTCPLimits bound the connections one ServeTCP relays at once, per
// client address and in total; a connection over them is closed at once.
var defaultTCPLimits = netutil.Limits{Total: 1024, PerClient: 256}

// ServeTCP accepts connections on ln and relays each one to target, dialed
// through d with a 10 second timeout. A client whose dial fails is
// disconnected. Half-closes are passed on: when one side shuts down its
// writing, the other side sees EOF and may still reply.
//
// At most 1024 connections are relayed at once, 256 per client address;
// further ones are closed at once, and logged at most once per 10 s.
//
// ServeTCP owns ln. It returns nil when ctx is cancelled or ln is closed
// (Accept reports net.ErrClosed), and an error wrapping any other accept
// failure that is not temporary. Before returning it closes ln and every
// relayed connection and waits for its goroutines. Some listeners report
// their own error after Close (gVisor's gonet does), so stop ServeTCP by
// cancelling ctx rather than by closing ln.
//
// Messages go to log (nil discards); label it with the flag, e.g.
// log.With("spec", spec.String()).
func ServeTCP(ctx context.Context, ln net.Listener, d Dialer, target string, log *slog.Logger) error {
	return newTCPServer(d, target, log).serve(ctx, ln)
}

type tcpServer struct {
	dialer Dialer
	target string
	log    *slog.Logger
	limits netutil.Limits // of the listener; tests shrink them

	wg sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // client and target conns being relayed
	closed bool                  // no new conns may be tracked
}

func newTCPServer(d Dialer, target string, log *slog.Logger) *tcpServer {
	return &tcpServer{
		dialer: d,
		target: target,
		log:    netutil.OrDiscard(log),
		limits: defaultTCPLimits,
		conns:  make(map[net.Conn]struct{}),
	}
}

func (s *tcpServer) serve(ctx context.Context, ln net.Listener) error {
	// A private context lets shutdown abort in-flight dials even when the
	// listener, not the caller's ctx, ended the loop.
	ctx, cancel := context.WithCancel(ctx)
	ln = netutil.LimitListener(ln, s.limits, netutil.NewRateLog(s.log, 0))
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer func() {
		stop()
		cancel()
		ln.Close()
		s.closeAll()
		s.wg.Wait()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !netutil.Temporary(err) {
				return fmt.Errorf("accept: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			s.log.Warn("accept failed, retrying", "err", err, "retry_in", backoff)
			if !netutil.Sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.wg.Go(func() { s.relay(ctx, c) })
	}
}

func (s *tcpServer) relay(ctx context.Context, client net.Conn) {
	defer s.release(client)
	start := time.Now()
	log := s.log.With("client", netutil.AddrString(client.RemoteAddr()))

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	upstream, err := s.dialer.DialContext(dctx, "tcp", s.target)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("dial failed, closing client connection", "target", s.target, "err", err)
		}
		return
	}
	if !s.track(upstream) {
		upstream.Close()
		return
	}
	defer s.release(upstream)
	log.Debug("connection opened", "target", s.target)

	sent, received, err := netutil.Join(client, upstream)
	log.Debug("connection closed", "sent", sent, "received", received,
		"duration", time.Since(start).Round(time.Millisecond), "err", err)
}

func (s *tcpServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *tcpServer) release(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *tcpServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// activeConns counts the client and target conns being relayed, for tests.
func (s *tcpServer) activeConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
