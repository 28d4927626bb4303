package netutil

import (
	"io"
	"net"
	"testing"
)

// copierConn is a conn with its own copies to and from host TCP sockets,
// as netstack's TCP conns have; it records which Join used.
type copierConn struct {
	net.Conn
	wroteTo, readFrom chan *net.TCPConn
}

func (c *copierConn) WriteToTCP(dst *net.TCPConn) (int64, error) {
	c.wroteTo <- dst
	return 0, nil
}

func (c *copierConn) ReadFromTCP(src *net.TCPConn) (int64, error) {
	c.readFrom <- src
	return io.Copy(io.Discard, src)
}

func (c *copierConn) CloseWrite() error { return nil }

// TestJoinUsesConnCopies checks that Join hands a host TCP socket to the
// other conn's own copies, through LimitListener's wrapper too, instead of
// copying through a buffer.
func TestJoinUsesConnCopies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	host, err := LimitListener(ln, Limits{Total: 4}, nil).Accept()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := net.Pipe()
	c := &copierConn{Conn: a, wroteTo: make(chan *net.TCPConn, 1), readFrom: make(chan *net.TCPConn, 1)}
	app.Close() // the host side ends at once: ReadFromTCP returns
	if _, _, err := Join(host, c); err != nil {
		t.Fatal(err)
	}
	if got := <-c.wroteTo; got != tcpOf(host) {
		t.Errorf("WriteToTCP got %v, want the host socket", got)
	}
	if got := <-c.readFrom; got != tcpOf(host) {
		t.Errorf("ReadFromTCP got %v, want the host socket", got)
	}
}
