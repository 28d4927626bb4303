package testutil

import (
	"net"
	"testing"
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
