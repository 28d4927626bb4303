package peerbook

import (
	"fmt"
	"net/netip"
	"testing"
)

// scaleBook returns a valid book of size members, each with an address,
// an endpoint on loopback and every eighth a subnet, and its text.
func scaleBook(tb testing.TB, size int) (*Book, []byte) {
	tb.Helper()
	b := &Book{
		Format: CurrentFormat,
		Serial: 1,
		Mesh:   Mesh{Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}},
	}
	for i := range size {
		k, err := GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		p := Peer{
			Name:      fmt.Sprintf("m%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, byte((i + 1) >> 8), byte(i + 1)})},
			Endpoint:  Endpoint{Host: "127.0.0.1", Port: uint16(20000 + i)},
		}
		if i%8 == 0 {
			p.Subnets = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}), 32)}
		}
		b.Peers = append(b.Peers, p)
	}
	text := Marshal(b)
	parsed, err := Parse("scale.toml", text)
	if err != nil {
		tb.Fatal(err)
	}
	return parsed, text
}

// BenchmarkParseBig measures Parse (TOML, validation and every cross
// check) of a book of 1,000 and 10,000 members.
func BenchmarkParseBig(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		_, text := scaleBook(b, size)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse("scale.toml", text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompareBig measures Compare of two books of 10,000 members that
// differ in one member's endpoint.
func BenchmarkCompareBig(b *testing.B) {
	book, _ := scaleBook(b, 10000)
	changed := *book
	changed.Peers = append([]Peer(nil), book.Peers...)
	changed.Peers[5000].Endpoint.Port++
	b.ReportAllocs()
	for b.Loop() {
		if d := Compare(book, &changed); len(d.Changed) != 1 {
			b.Fatalf("%d changed", len(d.Changed))
		}
	}
}
