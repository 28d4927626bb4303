package meshdns_test

import (
	"fmt"
	"log"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/meshdns"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Answer without a socket; ServePacketConn and ServeListener give the same
// replies over UDP and TCP.
func ExampleServer_Answer() {
	book, err := peerbook.Parse("book.toml", []byte(`
format = 1
[mesh]
networks = ["10.42.0.0/16"]

[[peer]]
name = "beta"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
addresses = ["10.42.0.2"]
`))
	if err != nil {
		log.Fatal(err)
	}
	s := &meshdns.Server{Book: func() *peerbook.Book { return book }}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"beta.mesh.", dns.TypeA},
		{"2.0.42.10.in-addr.arpa.", dns.TypePTR},
		{"gamma.mesh.", dns.TypeA},
		{"example.com.", dns.TypeA},
	} {
		r := s.Answer(new(dns.Msg).SetQuestion(q.name, q.qtype), book)
		fmt.Println(dns.RcodeToString[r.Rcode], r.Answer)
	}
	// Output:
	// NOERROR [beta.mesh.	60	IN	A	10.42.0.2]
	// NOERROR [2.0.42.10.in-addr.arpa.	60	IN	PTR	beta.mesh.]
	// NXDOMAIN []
	// REFUSED []
}
