package node

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// bigBook returns a book of size members with literal endpoints; member 0
// is the node under test.
func bigBook(b *testing.B, size int) (*peerbook.Book, peerbook.PrivateKey) {
	b.Helper()
	book, keys := testBook(b, 1)
	for i := 1; i < size; i++ {
		k, _ := peerbook.GeneratePrivateKey()
		book.Peers = append(book.Peers, peerbook.Peer{
			Name:      fmt.Sprintf("m%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, byte(i >> 8), byte(i)}).Next()},
			Endpoint:  peerbook.Endpoint{Host: "127.0.0.1", Port: uint16(20000 + i%30000)},
		})
	}
	// Member addresses above must not collide with member 0's 10.42.0.1.
	book.Peers[0].Addresses = []netip.Addr{netip.MustParseAddr("10.42.255.254")}
	// A public member: no persistent keepalive, so applying a book does
	// not start 10,000 handshakes (a NATed member would).
	book.Peers[0].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: 19999}
	return book, keys[0]
}

// BenchmarkApply measures applying a whole book to a fresh node ("cold":
// every member added) against applying a book that differs from the
// running one in one member's endpoint ("one change"). Run with
// `go test ./node -run XXX -bench Apply -benchtime 5x`.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		book, key := bigBook(b, size)
		selfOnly := *book
		selfOnly.Peers = book.Peers[:1]
		b.Run(fmt.Sprintf("cold/%d", size), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				n, err := New(Config{Book: &selfOnly, PrivateKey: key, ListenPort: EphemeralPort})
				if err != nil {
					b.Fatal(err)
				}
				if err := n.Up(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := n.Reload(context.Background(), book); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				n.Close()
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("one-change/%d", size), func(b *testing.B) {
			n, err := New(Config{Book: book, PrivateKey: key, ListenPort: EphemeralPort})
			if err != nil {
				b.Fatal(err)
			}
			if err := n.Up(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			changed := *book
			changed.Peers = append([]peerbook.Peer(nil), book.Peers...)
			changed.Peers[size/2].Endpoint.Port++
			books := []*peerbook.Book{&changed, book}
			i := 0
			for b.Loop() {
				if err := n.Reload(context.Background(), books[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkApplyDiff measures the pure diff of a 10,000-member book's
// configuration against one that differs in one member's endpoint, and
// rendering its transaction: the part of a one-member reload that grows
// with the book besides the device itself.
func BenchmarkApplyDiff(b *testing.B) {
	const size = 10000
	book, _ := bigBook(b, size)
	applied := make(map[peerbook.Key]*peerConfig, size)
	want := make(map[peerbook.Key]*peerConfig, size)
	for i := 1; i < size; i++ {
		p := &book.Peers[i]
		ep, _ := p.Endpoint.Addr()
		pc := &peerConfig{name: p.Name, key: p.PublicKey, endpoint: ep, own: p.AllowedIPs()}
		pc.allowedIPs = pc.own
		applied[p.PublicKey] = pc
		c := *pc
		if i == size/2 {
			c.endpoint = netip.AddrPortFrom(ep.Addr(), ep.Port()+1)
		}
		want[p.PublicKey] = &c
	}
	b.Run(fmt.Sprint(size), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := diffPeers(applied, want, book.Peers)
			if len(d.update) != 1 || d.transaction() == "" {
				b.Fatalf("%d updates", len(d.update))
			}
		}
	})
}
