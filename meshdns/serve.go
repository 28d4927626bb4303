package meshdns

import (
	"errors"
	"fmt"
	"net"
)

// ServePacketConn answers queries arriving on pc (UDP) until Close, then
// returns nil. It owns pc and closes it. pc may be a host socket or a
// socket in the mesh (node.ListenPacket).
func (s *Server) ServePacketConn(pc net.PacketConn) error {
	if s.Book == nil {
		pc.Close()
		return errors.New("meshdns: Server.Book is required")
	}
	return wrap(s.sockets.ServePacketConn(s, pc))
}

// ServeListener answers queries over TCP connections accepted on ln until
// Close, then returns nil. It owns ln and closes it.
func (s *Server) ServeListener(ln net.Listener) error {
	if s.Book == nil {
		ln.Close()
		return errors.New("meshdns: Server.Book is required")
	}
	return wrap(s.sockets.ServeListener(s, ln))
}

// Close stops every ServePacketConn and ServeListener and waits for them
// and the queries in progress. The first call returns nil; later calls
// return an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	return wrap(s.sockets.Close())
}

func wrap(err error) error {
	if err != nil {
		return fmt.Errorf("meshdns: %w", err)
	}
	return nil
}
