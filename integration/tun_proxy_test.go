package integration

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// socksConnect asks the SOCKS5 proxy at proxy (no authentication), from
// ns, to connect to dst. It returns the reply code and, on success, the
// connection.
func socksConnect(t *testing.T, ns *netNS, proxy, dst netip.AddrPort) (byte, net.Conn) {
	t.Helper()
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.DialTimeout("tcp", proxy.String(), 5*time.Second) })
	if err != nil {
		t.Fatalf("connect to the SOCKS5 proxy: %v", err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	req := []byte{5, 1, 0}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	greet := make([]byte, 2)
	if _, err := io.ReadFull(c, greet); err != nil || greet[1] != 0 {
		t.Fatalf("SOCKS5 greeting: %v %v", greet, err)
	}
	a := dst.Addr().Unmap()
	atyp := byte(1)
	if a.Is6() {
		atyp = 4
	}
	req = append([]byte{5, 1, 0, atyp}, a.AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, dst.Port())
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatalf("SOCKS5 reply: %v", err)
	}
	rest := 4 + 2
	if head[3] == 4 {
		rest = 16 + 2
	}
	if _, err := io.ReadFull(c, make([]byte, rest)); err != nil {
		t.Fatalf("SOCKS5 reply address: %v", err)
	}
	if head[1] != 0 {
		c.Close()
		return head[1], nil
	}
	return 0, c
}

// TestTUNProxyRefusesHostLocalTargets: beta publishes its loopback
// (subnets 127.0.0.0/8), so alpha's SOCKS5 proxy lets 127.0.0.1 through
// its rules. In TUN mode the host's kernel would deliver that to alpha's
// own loopback, not to beta: the connection must be refused, as must one
// to alpha's own LAN address (allowed with --proxy-allow). A mesh target
// works.
func TestTUNProxyRefusesHostLocalTargets(t *testing.T) {
	needRoot(t, "ip", "ping")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	alpha, beta := ms[0], ms[1]
	b := meshBook(ms)
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	book := writeBook(t, dir, b)
	local := netip.MustParseAddrPort("127.0.0.1:7200")
	serveEcho(t, alpha.NS, local, "alpha-loopback-only")
	serveEcho(t, alpha.NS, netip.AddrPortFrom(alpha.Underlay, 7201), "alpha-lan")
	socks := netip.MustParseAddrPort("127.0.0.1:1080")
	alpha.start(t, book, "--mode", "tun", "--interface", alpha.IfName, "--socks", socks.String(), "--proxy-allow", "198.18.0.0/24")
	beta.start(t, book, "--mode", "tun", "--interface", beta.IfName)
	serveEcho(t, beta.NS, netip.AddrPortFrom(meshAddr4(1), 7000), "beta")
	waitPing(t, alpha.NS, meshAddr4(1))

	rep, c := socksConnect(t, alpha.NS, socks, netip.AddrPortFrom(meshAddr4(1), 7000))
	if rep != 0 {
		t.Fatalf("CONNECT to beta's mesh address: reply %d", rep)
	}
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	c.Close()
	if got := strings.TrimSpace(string(buf[:n])); got != "beta saw 10.42.0.1" {
		t.Errorf("through the proxy to beta: %q", got)
	}
	for _, dst := range []netip.AddrPort{local, netip.AddrPortFrom(alpha.Underlay, 7201)} {
		if rep, c := socksConnect(t, alpha.NS, socks, dst); rep == 0 {
			n, _ := c.Read(buf)
			c.Close()
			t.Errorf("CONNECT %s reached a service of the proxy's own host: %q", dst, strings.TrimSpace(string(buf[:n])))
		}
	}
}
