package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingDialer remembers every address it is asked to dial.
type recordingDialer struct {
	d     Dialer
	mu    sync.Mutex
	addrs []string
}

func (r *recordingDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, network+" "+addr)
	r.mu.Unlock()
	return r.d.Dial(ctx, network, addr)
}

func (r *recordingDialer) dialed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs)
}

// socksClient is a minimal SOCKS5 client for tests: it speaks the protocol
// byte by byte so the server's replies can be checked exactly.
type socksClient struct {
	t    *testing.T
	conn net.Conn
}

// dialSOCKS connects to the proxy and negotiates: no authentication when
// user is "", else username/password. It returns the client, or the auth
// status byte the server sent when authentication failed.
func dialSOCKS(t *testing.T, proxyAddr, user, pass string) (*socksClient, byte, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	method := byte(methodNoAuth)
	if user != "" {
		method = methodUserPass
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return nil, 0, err
	}
	var rep [2]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return nil, 0, fmt.Errorf("read method reply: %w", err)
	}
	if rep[0] != 5 || rep[1] != method {
		return nil, rep[1], fmt.Errorf("server chose method %#x, want %#x", rep[1], method)
	}
	if user != "" {
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			return nil, 0, err
		}
		if _, err := io.ReadFull(c, rep[:]); err != nil {
			return nil, 0, fmt.Errorf("read auth reply: %w", err)
		}
		if rep[0] != 1 || rep[1] != 0 {
			return nil, rep[1], fmt.Errorf("auth status %#x", rep[1])
		}
	}
	return &socksClient{t: t, conn: c}, 0, nil
}

// encodeAddr encodes host (IP literal or name) and port as ATYP ADDR PORT.
func encodeAddr(host string, port uint16) []byte {
	var b []byte
	if ip, err := netip.ParseAddr(host); err == nil {
		b = appendAddr(nil, netip.AddrPortFrom(ip, port))
		return b
	}
	b = append([]byte{atypDomain, byte(len(host))}, host...)
	return binary.BigEndian.AppendUint16(b, port)
}

// request sends cmd for host:port and returns the reply code and bound
// address.
func (c *socksClient) request(cmd byte, host string, port uint16) (byte, netip.AddrPort, error) {
	if _, err := c.conn.Write(append([]byte{5, cmd, 0}, encodeAddr(host, port)...)); err != nil {
		return 0, netip.AddrPort{}, err
	}
	var hdr [3]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return 0, netip.AddrPort{}, fmt.Errorf("read reply: %w", err)
	}
	if hdr[0] != 5 {
		return 0, netip.AddrPort{}, fmt.Errorf("reply version %d", hdr[0])
	}
	h, p, err := readAddr(c.conn)
	if err != nil {
		return hdr[1], netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return hdr[1], netip.AddrPort{}, fmt.Errorf("bound address %q", h)
	}
	return hdr[1], netip.AddrPortFrom(ip, p), nil
}

// udpRequest wraps payload in the SOCKS5 UDP header for host:port.
func udpRequest(host string, port uint16, payload string) []byte {
	return append(append([]byte{0, 0, 0}, encodeAddr(host, port)...), payload...)
}

// udpRoundTrip sends payload to host:port through the relay until a reply
// arrives (the first datagrams may be lost while WireGuard shakes hands)
// and returns the reply's source and data.
func udpRoundTrip(pc net.PacketConn, relay netip.AddrPort, host string, port uint16, payload string) (netip.AddrPort, string, error) {
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 40; attempt++ {
		if _, err := pc.WriteTo(udpRequest(host, port, payload), net.UDPAddrFromAddrPort(relay)); err != nil {
			return netip.AddrPort{}, "", err
		}
		pc.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		src, port, data, err := parseUDPRequest(buf[:n])
		if err != nil {
			return netip.AddrPort{}, "", err
		}
		ip, err := netip.ParseAddr(src)
		if err != nil {
			return netip.AddrPort{}, "", fmt.Errorf("reply source %q is not an address", src)
		}
		return netip.AddrPortFrom(ip, port), string(data), nil
	}
	return netip.AddrPort{}, "", fmt.Errorf("no UDP reply from %s:%d", host, port)
}

// expectSilence fails if pc receives anything within d.
func expectSilence(t *testing.T, pc net.PacketConn, d time.Duration) {
	t.Helper()
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(d))
	if n, from, err := pc.ReadFrom(buf); err == nil {
		t.Errorf("unexpected datagram from %v: %q", from, bytes.TrimSpace(buf[:n]))
	}
}
