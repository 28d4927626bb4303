package registry

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// readTimeout bounds how long a TCP client may take to send a query; it is
// also how often the UDP loop wakes up.
const readTimeout = 10 * time.Second

// ServePacketConn answers queries arriving on pc (UDP) until Close, then
// returns nil. It owns pc and closes it. pc may be a host socket or a
// socket in the mesh (node.ListenPacket).
func (s *Server) ServePacketConn(pc net.PacketConn) error {
	return s.serve(&dns.Server{PacketConn: pc, Net: "udp"}, pc)
}

// ServeListener answers queries over TCP connections accepted on ln until
// Close, then returns nil. It owns ln and closes it.
func (s *Server) ServeListener(ln net.Listener) error {
	return s.serve(&dns.Server{Listener: ln, Net: "tcp"}, ln)
}

// Close stops every ServePacketConn and ServeListener and waits for them
// and the queries in progress. The first call returns nil; later calls
// return an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	return s.sockets.close()
}

func (s *Server) serve(srv *dns.Server, sock interface{ Close() error }) error {
	if s.Members == nil {
		sock.Close()
		return errors.New("registry: Server.Members is required")
	}
	srv.Handler = s
	srv.ReadTimeout = readTimeout
	srv.WriteTimeout = readTimeout
	e := &served{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
	srv.NotifyStartedFunc = func() { close(e.started) }
	if !s.sockets.add(e) {
		sock.Close()
		return fmt.Errorf("registry: serve: %w", net.ErrClosed)
	}
	defer s.sockets.remove(e)
	defer close(e.done)
	err := srv.ActivateAndServe()
	if err != nil && s.sockets.isClosed() {
		// gVisor's sockets report their own error once closed.
		return nil
	}
	if err != nil {
		return fmt.Errorf("registry: serve: %w", err)
	}
	return nil
}

// served is one running dns.Server.
type served struct {
	srv     *dns.Server
	started chan struct{} // closed once the server is serving
	done    chan struct{} // closed when ActivateAndServe has returned
}

// sockets tracks the running dns.Servers, so that Close can stop them
// even if it races with their start.
type sockets struct {
	mu     sync.Mutex
	all    map[*served]struct{}
	closed bool
}

func (ss *sockets) add(e *served) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	if ss.all == nil {
		ss.all = make(map[*served]struct{})
	}
	ss.all[e] = struct{}{}
	return true
}

func (ss *sockets) remove(e *served) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.all, e)
}

func (ss *sockets) isClosed() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closed
}

func (ss *sockets) close() error {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return fmt.Errorf("registry: close: %w", net.ErrClosed)
	}
	ss.closed = true
	all := make([]*served, 0, len(ss.all))
	for e := range ss.all {
		all = append(all, e)
	}
	ss.mu.Unlock()
	for _, e := range all {
		select {
		case <-e.started:
			// Shutdown closes the socket, unblocks reads and waits for
			// the queries in progress.
			e.srv.Shutdown()
		case <-e.done: // failed to start
		}
		<-e.done
	}
	return nil
}
