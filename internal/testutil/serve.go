package testutil

import (
	"net"
	"testing"
	"time"
)

// ServeConns accepts connections on ln until ln is closed, which it is
// when the test ends, and runs handle on each in a goroutine of its own,
// closing the connection when handle returns.
func ServeConns(tb testing.TB, ln net.Listener, handle func(net.Conn)) {
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// ClosedWithin reports whether the far side closes c (a read ends with EOF
// or a reset) within d: a server that refuses a connection over its limits
// closes it at once, one that serves it does not.
func ClosedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// DialFrom dials addr over network ("tcp" or "udp") from the local
// address src (a loopback address other than 127.0.0.1 makes another
// client) and closes the connection when the test ends.
func DialFrom(t testing.TB, network, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	if network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
