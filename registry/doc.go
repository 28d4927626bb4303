// Package registry publishes and looks up members' observed WireGuard
// endpoints over DNS-SD, in the record format of the wgsd CoreDNS plugin,
// so that members behind NAT can find each other's public mappings.
//
// A [Server] runs on a registry member and is authoritative for one zone
// (the mesh domain, "mesh." by default). A member's label is its public
// key in RFC 4648 standard base32 with padding (56 characters ending in
// "===="), emitted in lower case and matched in any case:
//
//	_wireguard._udp.ZONE        PTR  LABEL._wireguard._udp.ZONE  (one per member with an endpoint)
//	LABEL._wireguard._udp.ZONE  SRV  0 0 PORT LABEL._wireguard._udp.ZONE
//	LABEL._wireguard._udp.ZONE  A or AAAA  the endpoint's address (by family)
//	LABEL._wireguard._udp.ZONE  TXT  "txtvers=1" "pub=BASE64KEY" "allowed=CIDR,CIDR,..." ["lan=ADDR:PORT,..."]
//
// The lan= strings are the member's LAN candidates, present when it
// announced them ([Announce], a DNS UPDATE the server accepts only from the
// member's own mesh address, see Server.Owner); clients of the wgsd format
// ignore them, [LookupMember] and [List] return them.
//
// An SRV answer carries the A or AAAA record first in the additional
// section, then the TXT; A, AAAA and TXT queries answer those records
// directly. Every record has TTL 0 and every answer in the zone is
// authoritative. An unknown label, or a member without an observed
// endpoint, gets NXDOMAIN with the zone's SOA (minimum TTL 0) in the
// authority section; names outside the zone get REFUSED. Replies over UDP
// fit 512 bytes, or the client's EDNS0 size up to 1232, and set TC when
// cut, so clients ask again over TCP, which the same Server serves.
//
// The client side, [Lookup] and [List], works against any server of that
// format: a wgmesh registry reached through the mesh, or CoreDNS with the
// wgsd plugin. [DialExchanger] carries the queries over any Dial func.
//
// # Usage
//
// On a registry member, publish the endpoints the device observes, on the
// node's mesh address:
//
//	s := &registry.Server{Zone: "mesh.", Members: observed, Logger: log}
//	pc, err := n.ListenPacket("udp", "10.42.0.1:53")
//	go s.ServePacketConn(pc)
//	ln, err := n.Listen("tcp", "10.42.0.1:53")
//	go s.ServeListener(ln)
//	defer s.Close()
//
// On a member behind NAT, ask a registry for a peer's endpoint:
//
//	ex := registry.DialExchanger{Dial: n.Dial, Addr: "10.42.0.1:53"}
//	ep, err := registry.Lookup(ctx, ex, "mesh.", peerKey)
//	if errors.Is(err, registry.ErrNotFound) {
//		// the registry has no endpoint for it (yet)
//	}
package registry
