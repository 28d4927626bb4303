//go:build !unix

package netstack

import "net"

func hostConn(c net.Conn) readWaiter { return &plainConn{c} }
