package node

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// TestNetstackSubnetRouting: member n1 runs without root and lists a
// subnet; n0 reaches a host server inside it through the mesh, TCP and
// UDP. The subnet here is part of the loopback network, standing for the
// LAN the member sits in.
func TestNetstackSubnetRouting(t *testing.T) {
	m := newTestMeshWith(t, 2, func(b *peerbook.Book) {
		b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
	})
	a, b := m.nodes[0], m.nodes[1]

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		io.WriteString(c, "lan says "+c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
		io.Copy(c, c)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("lan echo "), buf[:n]...), from)
		}
	}()

	// n1 routes 127.0.0.0/24. n0's copy of the book claims n1 routes all of
	// 127.0.0.0/16, so n0 sends 127.0.1.1 there too: n1 must refuse it.
	withSubnet := func(p string) *peerbook.Book {
		bk := *m.book
		bk.Serial++
		bk.Peers = append([]peerbook.Peer(nil), m.book.Peers...)
		bk.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix(p)}
		return &bk
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Reload(ctx, withSubnet("127.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(ctx, withSubnet("127.0.0.0/24")); err != nil {
		t.Fatal(err)
	}

	c, err := a.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("tcp into n1's subnet: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "lan says 127.0.0.1\n" {
		t.Fatalf("tcp: %q, %v", buf[:n], err)
	}
	io.WriteString(c, "ping")
	if n, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("tcp echo: %q, %v", buf[:n], err)
	}
	c.Close()

	u, err := a.Dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("hi"))
	u.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "lan echo hi" {
		t.Fatalf("udp: %q, %v", buf[:n], err)
	}

	// Outside n1's subnets: refused, although n0 routed it to n1 and n1's
	// host would accept it (servers listen on 127.0.1.1, outside /24).
	outTCP, err := net.Listen("tcp", "127.0.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveLine(t, outTCP, "outside")
	outUDP, err := net.ListenPacket("udp", "127.0.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outUDP.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := outUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			outUDP.WriteTo(buf[:n], from)
		}
	}()
	short, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	if c, err := a.Dial(short, "tcp", outTCP.Addr().String()); err == nil {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _ := c.Read(buf)
		c.Close()
		t.Fatalf("tcp to an address outside n1's subnets was forwarded (read %q)", buf[:n])
	}
	uo, err := a.Dial(ctx, "udp", outUDP.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uo.Close()
	uo.Write([]byte("outside"))
	uo.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := uo.Read(buf); err == nil {
		t.Fatalf("udp to an address outside n1's subnets was forwarded (read %q)", buf[:n])
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// n1's own mesh address still behaves as a host: ICMP-free check that
	// a closed port is refused rather than forwarded.
	if c, err := a.Dial(short, "tcp", "n1:"+port); err == nil {
		c.Close()
		t.Fatal("tcp to n1's own closed port was forwarded to the host")
	}
}

// TestNetstackListenOnSubnetRouter: a rootless subnet router's stack takes
// packets for any address, so a listener on ":PORT" (what --expose opens)
// must still answer only on the member's own mesh addresses. Flows to a LAN
// host at the same port go to the LAN host, or are refused when it has no
// such server; they never reach the member's own service.
func TestNetstackListenOnSubnetRouter(t *testing.T) {
	m := newTestMeshWith(t, 2, func(b *peerbook.Book) {
		b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
	})
	a, b := m.nodes[0], m.nodes[1]

	lan, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	serveLine(t, lan, "lan")
	lanUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lanUDP.Close()
	go echoPrefixed(lanUDP, "lan ")
	_, tport, _ := net.SplitHostPort(lan.Addr().String())
	_, uport, _ := net.SplitHostPort(lanUDP.LocalAddr().String())

	own, err := b.Listen("tcp", ":"+tport)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	serveLine(t, own, "exposed")
	ownUDP, err := b.ListenPacket("udp", ":"+uport)
	if err != nil {
		t.Fatal(err)
	}
	defer ownUDP.Close()
	go echoPrefixed(ownUDP, "exposed ")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readLine := func(addr string) (string, error) {
		network := "tcp"
		if strings.HasPrefix(addr, "[") {
			network = "tcp6"
		}
		c, err := a.Dial(ctx, network, addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	udpAsk := func(addr string) (string, error) {
		c, err := a.Dial(ctx, "udp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}

	if got, err := readLine("n1:" + tport); err != nil || got != "exposed\n" {
		t.Errorf("tcp to n1's mesh address: %q, %v; want the exposed service", got, err)
	}
	if got, err := readLine("[fd42:42::2]:" + tport); err != nil || got != "exposed\n" {
		t.Errorf("tcp to n1's IPv6 mesh address: %q, %v; want the exposed service", got, err)
	}
	if got, err := readLine("127.0.0.1:" + tport); err != nil || got != "lan\n" {
		t.Errorf("tcp to the LAN host: %q, %v; want the LAN host", got, err)
	}
	if got, err := readLine("127.0.0.2:" + tport); err == nil {
		t.Errorf("tcp to a LAN address without a server: answered %q, want refused", got)
	}
	if got, err := udpAsk("n1:" + uport); err != nil || got != "exposed hi" {
		t.Errorf("udp to n1's mesh address: %q, %v; want the exposed service", got, err)
	}
	if got, err := udpAsk("127.0.0.1:" + uport); err != nil || got != "lan hi" {
		t.Errorf("udp to the LAN host: %q, %v; want the LAN host", got, err)
	}
	if got, err := udpAsk("127.0.0.2:" + uport); err == nil {
		t.Errorf("udp to a LAN address without a server: answered %q, want no answer", got)
	}
}

// serveLine answers every connection on ln with line and a newline.
func serveLine(t *testing.T, ln net.Listener, line string) {
	testutil.ServeConns(t, ln, func(c net.Conn) { io.WriteString(c, line+"\n") })
}

// echoPrefixed answers each datagram on pc with prefix and the datagram.
func echoPrefixed(pc net.PacketConn, prefix string) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
	}
}
