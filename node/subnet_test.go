package node

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

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
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "lan says "+c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
				io.Copy(c, c)
			}()
		}
	}()
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
	defer outTCP.Close()
	go func() {
		for {
			c, err := outTCP.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "outside\n")
			c.Close()
		}
	}()
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
