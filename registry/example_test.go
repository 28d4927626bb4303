package registry_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/registry"
)

// Answer without a socket: the records of one member.
func ExampleServer_Answer() {
	key, err := peerbook.ParseKey("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
	if err != nil {
		log.Fatal(err)
	}
	s := &registry.Server{Zone: "mesh.", Members: func() []registry.Member {
		return []registry.Member{{
			PublicKey:  key,
			Endpoint:   netip.MustParseAddrPort("198.51.100.7:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.0.7/32")},
		}}
	}}
	r := s.Answer(new(dns.Msg).SetQuestion(registry.InstanceName("mesh.", key), dns.TypeSRV))
	for _, rr := range append(r.Answer, r.Extra...) {
		fmt.Println(rr)
	}
	// Output:
	// yuzaca423oquxzy7rbw2dwg35hxl33iizmirw5juab4jtgvj6a4a====._wireguard._udp.mesh.	0	IN	SRV	0 0 51820 yuzaca423oquxzy7rbw2dwg35hxl33iizmirw5juab4jtgvj6a4a====._wireguard._udp.mesh.
	// yuzaca423oquxzy7rbw2dwg35hxl33iizmirw5juab4jtgvj6a4a====._wireguard._udp.mesh.	0	IN	A	198.51.100.7
	// yuzaca423oquxzy7rbw2dwg35hxl33iizmirw5juab4jtgvj6a4a====._wireguard._udp.mesh.	0	IN	TXT	"txtvers=1" "pub=xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=" "allowed=10.42.0.7/32"
}

// A registry on loopback, and a client asking it for one member's
// endpoint and for the whole list. In a node, serve on the mesh address
// and pass the node's Dial to DialExchanger.
func ExampleLookup() {
	key, err := peerbook.ParseKey("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
	if err != nil {
		log.Fatal(err)
	}
	s := &registry.Server{Zone: "mesh.", Members: func() []registry.Member {
		return []registry.Member{{PublicKey: key, Endpoint: netip.MustParseAddrPort("198.51.100.7:51820")}}
	}}
	pc, ln, err := listenBoth()
	if err != nil {
		log.Fatal(err)
	}
	go s.ServePacketConn(pc)
	go s.ServeListener(ln)
	defer s.Close()

	ex := registry.DialExchanger{Addr: pc.LocalAddr().String()}
	ep, err := registry.Lookup(context.Background(), ex, "mesh.", key)
	fmt.Println(ep, err)
	members, err := registry.List(context.Background(), ex, "mesh.")
	fmt.Println(len(members), members[0].PublicKey, err)
	// Output:
	// 198.51.100.7:51820 <nil>
	// 1 xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= <nil>
}

// listenBoth binds UDP and TCP on one loopback port, trying another port
// when the TCP twin of the system's UDP choice is taken.
func listenBoth() (net.PacketConn, net.Listener, error) {
	var err error
	for range 50 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, nil, err
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, ln, nil
		}
		pc.Close()
	}
	return nil, nil, err
}
