package peerbook

import (
	"fmt"
	"testing"
)

// TestPeerByKeyIndexed: Parse indexes members by key, and the index never
// gives a wrong answer for a book changed after parsing: a copy that grew
// its member list, a key replaced in place, a member list replaced.
func TestPeerByKeyIndexed(t *testing.T) {
	book, _ := scaleBook(t, 50)
	if book.keys == nil || len(book.keys.at) != 50 {
		t.Fatalf("Parse left no key index: %+v", book.keys)
	}
	for i := range book.Peers {
		p, ok := book.PeerByKey(book.Peers[i].PublicKey)
		if !ok || p != &book.Peers[i] {
			t.Fatalf("member %d: got %p %v, want %p", i, p, ok, &book.Peers[i])
		}
		if q, ok := book.keys.lookup(book, book.Peers[i].PublicKey); !ok || q != p {
			t.Fatalf("member %d not answered by the index", i)
		}
	}
	other, _ := GeneratePrivateKey()
	if _, ok := book.PeerByKey(other.Public()); ok {
		t.Fatal("found a key that is not in the book")
	}

	// A key changed in place: the old key is gone, the new one found.
	old := book.Peers[7].PublicKey
	book.Peers[7].PublicKey = other.Public()
	if _, ok := book.PeerByKey(old); ok {
		t.Error("found a key changed away in place")
	}
	if p, ok := book.PeerByKey(other.Public()); !ok || p != &book.Peers[7] {
		t.Error("a key set in place is not found")
	}
	book.Peers[7].PublicKey = old

	// A copy that grew: the index no longer matches, the scan answers.
	grown := *book
	extra, _ := GeneratePrivateKey()
	grown.Peers = append(grown.Peers, Peer{Name: "extra", PublicKey: extra.Public()})
	if p, ok := grown.PeerByKey(extra.Public()); !ok || p.Name != "extra" {
		t.Error("a member appended to a copy is not found")
	}
	// A copy with a new member list of the same length, reordered.
	swapped := *book
	swapped.Peers = append([]Peer(nil), book.Peers...)
	swapped.Peers[0], swapped.Peers[1] = swapped.Peers[1], swapped.Peers[0]
	if p, ok := swapped.PeerByKey(book.Peers[0].PublicKey); !ok || p != &swapped.Peers[1] {
		t.Error("a reordered copy answers from the original's index")
	}
	// A literal book has no index and is scanned.
	lit := &Book{Peers: []Peer{{Name: "a", PublicKey: extra.Public()}}}
	if p, ok := lit.PeerByKey(extra.Public()); !ok || p.Name != "a" {
		t.Error("a literal book's member is not found")
	}
}

// BenchmarkPeerByKeyBig looks up the last member of a parsed book of
// 10,000 members (the index) and of the same book unindexed (the scan).
func BenchmarkPeerByKeyBig(b *testing.B) {
	book, _ := scaleBook(b, 10000)
	last := book.Peers[len(book.Peers)-1].PublicKey
	scan := *book
	scan.keys = nil
	for _, c := range []struct {
		name string
		b    *Book
	}{{"index", book}, {"scan", &scan}} {
		b.Run(fmt.Sprint(c.name), func(b *testing.B) {
			for b.Loop() {
				if _, ok := c.b.PeerByKey(last); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}
