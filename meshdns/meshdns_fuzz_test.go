package meshdns

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

// FuzzMeshDNSQuery: any query a client on the mesh sends gets a reply that
// packs, answers the question it was asked, and tells only what the book
// holds: A and AAAA records are members' addresses under a member's name,
// PTR records name a member from that member's own address.
func FuzzMeshDNSQuery(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"alpha.mesh.", dns.TypeA}, {"BETA.mesh.", dns.TypeAAAA}, {"beta.", dns.TypeANY}, {"mesh.", dns.TypeSOA},
		{"1.0.42.10.in-addr.arpa.", dns.TypePTR}, {"42.10.in-addr.arpa.", dns.TypeSOA},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.2.4.d.f.ip6.arpa.", dns.TypePTR},
		{"9.9.42.10.in-addr.arpa.", dns.TypePTR}, {"example.com.", dns.TypeA}, {"x.alpha.mesh.", dns.TypeA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		m.SetEdns0(4096, false)
		b, _ = m.Pack()
		f.Add(b)
	}
	book := unitBook()
	s := &Server{}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if req.Unpack(data) != nil {
			return
		}
		m := s.Answer(req, book)
		if m.Id != req.Id || !m.Response {
			t.Fatal("reply does not answer the query")
		}
		if _, err := m.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v", err)
		}
		if len(req.Question) == 1 && (len(m.Question) != 1 || m.Question[0] != req.Question[0]) {
			t.Fatalf("question %v answered as %v", req.Question, m.Question)
		}
		for _, rr := range m.Answer {
			checkAnswer(t, book, req.Question[0], rr)
		}
	})
}

func checkAnswer(t *testing.T, book *peerbook.Book, q dns.Question, rr dns.RR) {
	t.Helper()
	if rr.Header().Name != q.Name {
		t.Fatalf("answer for %q to a question for %q", rr.Header().Name, q.Name)
	}
	var addr netip.Addr
	switch rr := rr.(type) {
	case *dns.A:
		addr, _ = netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		addr, _ = netip.AddrFromSlice(rr.AAAA)
	case *dns.PTR:
		ip, ok := parseReverse(strings.ToLower(q.Name))
		p, named := book.PeerByName(strings.TrimSuffix(rr.Ptr, "."))
		if !ok || !named || !hasAddr(p, ip) {
			t.Fatalf("PTR %s -> %s is not a member's address", q.Name, rr.Ptr)
		}
		return
	case *dns.SOA:
		return
	default:
		t.Fatalf("unexpected answer %v", rr)
	}
	p, ok := book.PeerByName(q.Name)
	if !ok {
		p, ok = book.PeerByName(strings.TrimSuffix(q.Name, "."))
	}
	if !ok || !hasAddr(p, addr) {
		t.Fatalf("%s answered with %v, not the member's address", q.Name, addr)
	}
}

func hasAddr(p *peerbook.Peer, a netip.Addr) bool {
	for _, x := range p.Addresses {
		if x == a {
			return true
		}
	}
	return false
}

// FuzzParseReverse: a reverse name stands for at most one address, and
// that address's reverse name is the input (up to case): parse -> format
// -> parse is the identity.
func FuzzParseReverse(f *testing.F) {
	for _, a := range []string{"10.42.0.1", "fd42:42::2", "0.0.0.0", "255.255.255.255", "::"} {
		r, _ := dns.ReverseAddr(a)
		f.Add(r)
	}
	f.Add("010.0.42.10.in-addr.arpa.")
	f.Add("1.0.42.10.in-addr.arpa")
	f.Add("A.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.2.4.d.f.ip6.arpa.")
	f.Fuzz(func(t *testing.T, name string) {
		ip, ok := parseReverse(name)
		if !ok {
			return
		}
		back, err := dns.ReverseAddr(ip.String())
		if err != nil || !strings.EqualFold(back, name) {
			t.Fatalf("%q parses as %v, whose reverse name is %q", name, ip, back)
		}
		if again, ok := parseReverse(back); !ok || again != ip {
			t.Fatalf("%q parses as %v, %v", back, again, ok)
		}
	})
}
