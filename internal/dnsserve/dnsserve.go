// Package dnsserve runs a dns.Handler on any number of sockets — host
// sockets or sockets in the mesh — and stops them all at once. The mesh
// name server (meshdns) and the endpoint registry (registry) share it.
package dnsserve

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ReadTimeout bounds how long a TCP client may take to send a query; it is
// also how often the UDP loop wakes up.
const ReadTimeout = 10 * time.Second

// Group is a set of running DNS servers. Its zero value is ready to use.
type Group struct {
	mu     sync.Mutex
	all    map[*served]struct{}
	closed bool
}

// served is one running dns.Server.
type served struct {
	srv     *dns.Server
	started chan struct{} // closed once the server is serving
	done    chan struct{} // closed when ActivateAndServe has returned
}

// ServePacketConn answers queries on pc (UDP) with h until Close, then
// returns nil. It owns pc and closes it.
func (g *Group) ServePacketConn(h dns.Handler, pc net.PacketConn) error {
	return g.serve(&dns.Server{PacketConn: pc, Net: "udp", Handler: h}, pc)
}

// ServeListener answers queries over TCP connections accepted on ln with h
// until Close, then returns nil. It owns ln and closes it.
func (g *Group) ServeListener(h dns.Handler, ln net.Listener) error {
	return g.serve(&dns.Server{Listener: ln, Net: "tcp", Handler: h}, ln)
}

// AcceptFunc is dns.DefaultMsgAcceptFunc that also lets through a small
// DNS UPDATE (one zone, no prerequisites, one update record): the
// registry's LAN announcements. Handlers that take no updates answer them
// NOTIMP (NewReply).
func AcceptFunc(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) == 0 && int(dh.Bits>>11)&0xF == dns.OpcodeUpdate {
		if dh.Qdcount == 1 && dh.Ancount == 0 && dh.Nscount == 1 && dh.Arcount <= 1 {
			return dns.MsgAccept
		}
		return dns.MsgReject
	}
	return dns.DefaultMsgAcceptFunc(dh)
}

func (g *Group) serve(srv *dns.Server, sock interface{ Close() error }) error {
	srv.MsgAcceptFunc = AcceptFunc
	srv.ReadTimeout = ReadTimeout
	srv.WriteTimeout = ReadTimeout
	e := &served{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
	srv.NotifyStartedFunc = func() { close(e.started) }
	if !g.add(e) {
		sock.Close()
		return fmt.Errorf("serve: %w", net.ErrClosed)
	}
	defer g.remove(e)
	defer close(e.done)
	err := srv.ActivateAndServe()
	if err != nil && g.isClosed() {
		// gVisor's sockets report their own error once closed.
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func (g *Group) add(e *served) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.all == nil {
		g.all = make(map[*served]struct{})
	}
	g.all[e] = struct{}{}
	return true
}

func (g *Group) remove(e *served) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.all, e)
}

func (g *Group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close stops every server of the group and waits for them and the
// queries in progress, even if it races with their start. The first call
// returns nil; later calls return an error wrapping net.ErrClosed.
func (g *Group) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("close: %w", net.ErrClosed)
	}
	g.closed = true
	all := make([]*served, 0, len(g.all))
	for e := range g.all {
		all = append(all, e)
	}
	g.mu.Unlock()
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
