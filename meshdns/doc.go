// Package meshdns answers DNS queries for member names of a wgmesh mesh.
//
// A [Server] is authoritative for the book's mesh domain (default "mesh"):
//
//   - A and AAAA for NAME.DOMAIN. and for the bare member name NAME.,
//     case-insensitive, with the member's mesh addresses;
//   - PTR for members' mesh addresses (in-addr.arpa and ip6.arpa) pointing
//     to NAME.DOMAIN.;
//   - NXDOMAIN, with the zone's SOA in the authority section, for unknown
//     names in the domain and for reverse names inside the mesh networks;
//   - REFUSED for everything else: it is not a recursive resolver, so point
//     only the mesh domain at it (e.g. a systemd-resolved routing domain
//     "~mesh" or a dnsmasq "server=/mesh/127.0.0.1#5353").
//
// Answers carry a TTL of 60 seconds and the SOA serial is the book's
// serial. The book is read through a func on every query, so answers follow
// a reload at once.
//
// # Usage
//
// Serve the same Server on the host and, in netstack mode, inside the mesh
// on the node's mesh addresses, so members can use each other as resolver:
//
//	s := &meshdns.Server{Book: n.Book, Logger: log}
//	pc, err := net.ListenPacket("udp", "127.0.0.1:5353")
//	go s.ServePacketConn(pc)
//	ln, err := net.Listen("tcp", "127.0.0.1:5353")
//	go s.ServeListener(ln)
//	mpc, err := n.ListenPacket("udp", "10.42.0.2:53") // one per mesh address
//	go s.ServePacketConn(mpc)
//	defer s.Close()
package meshdns
