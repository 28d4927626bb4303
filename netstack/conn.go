package netstack

import (
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if !ap.Addr().IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return fa, proto
}

// DialUDP opens a connected UDP socket to dst through the stack.
func (s *Stack) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialUDP(s.stack, nil, &fa, proto)
}

// ListenTCP listens on addr. An unspecified address listens on each of the
// stack's own addresses (of that family, or of both when addr has none),
// never on a wildcard: a subnet-routing stack takes packets for any
// destination, and a wildcard listener would answer flows meant for hosts
// in its subnets.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	if addr.Addr().IsValid() && !addr.Addr().IsUnspecified() {
		return s.listenTCP(addr)
	}
	own := s.ownAddrs(addr.Addr())
	if len(own) == 0 {
		return nil, ErrNoAddress
	}
	lns := make([]net.Listener, 0, len(own))
	port := addr.Port()
	for _, a := range own {
		ln, err := s.listenTCP(netip.AddrPortFrom(a, port))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		if port == 0 { // the others take the port the first one got
			port = uint16(ln.Addr().(*net.TCPAddr).Port)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 1 {
		return lns[0], nil
	}
	return newMultiListener(lns), nil
}

// ListenUDP binds a UDP socket on addr. An unspecified address binds the
// stack's first own address (of that family, or IPv4 first when addr has
// none), never a wildcard (see ListenTCP); to serve another address, give
// it.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		own := s.ownAddrs(addr.Addr())
		if len(own) == 0 {
			return nil, ErrNoAddress
		}
		addr = netip.AddrPortFrom(own[0], addr.Port())
	}
	fa, proto := fullAddr(addr)
	return gonet.DialUDP(s.stack, &fa, nil, proto)
}

// ownAddrs returns the stack's addresses that an unspecified listen
// address stands for: those of its family, or all of them, IPv4 first,
// when it has none.
func (s *Stack) ownAddrs(unspec netip.Addr) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range s.addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	switch {
	case unspec.Is4():
		return v4
	case unspec.Is6():
		return v6
	}
	return append(v4, v6...)
}

// multiListener accepts from several listeners on one port, one per own
// address. The first error of any of them (the stack closed, say) ends it.
type multiListener struct {
	lns   []net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // set before done is closed
}

func newMultiListener(lns []net.Listener) *multiListener {
	m := &multiListener{lns: lns, conns: make(chan net.Conn), done: make(chan struct{})}
	for _, ln := range lns {
		go m.acceptLoop(ln)
	}
	return m
}

func (m *multiListener) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			m.stop(err)
			return
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

// stop ends the listener with err, closing every listener of it.
func (m *multiListener) stop(err error) {
	m.once.Do(func() {
		m.err = err
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
}

// Accept implements net.Listener.
func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, m.err
	}
}

// Close implements net.Listener; Accept then returns net.ErrClosed.
func (m *multiListener) Close() error {
	m.stop(&net.OpError{Op: "accept", Net: "tcp", Addr: m.Addr(), Err: net.ErrClosed})
	return nil
}

// Addr implements net.Listener: the first own address listened on.
func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }
