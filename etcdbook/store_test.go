package etcdbook

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// testBook is a valid book of n members.
func testBook(t testing.TB, n int) *peerbook.Book {
	t.Helper()
	b := &peerbook.Book{
		Format: peerbook.CurrentFormat,
		Serial: 1,
		Mesh: peerbook.Mesh{
			Domain:              "mesh",
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
			ListenPort:          51820,
			MTU:                 1420,
			PersistentKeepalive: 25,
		},
	}
	for i := 0; i < n; i++ {
		b.Peers = append(b.Peers, peerbook.Peer{
			Name:      fmt.Sprintf("m%04d", i),
			PublicKey: testKey(t),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, byte((i + 1) >> 8), byte(i + 1)})},
		})
	}
	if err := peerbook.Validate(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testKey(t testing.TB) peerbook.Key {
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// connect is a store for a fresh prefix of the test's own.
func connect(t testing.TB, prefix string) *Store {
	t.Helper()
	tg, err := ParseURL("etcd://" + strings.Join(etcdShared.Need(t).Endpoints(), ",") + "/" + prefix)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Connect(tg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sameMembers(t *testing.T, a, b *peerbook.Book) {
	t.Helper()
	if a.Serial != b.Serial || !a.Mesh.Equal(&b.Mesh) || len(a.Peers) != len(b.Peers) {
		t.Fatalf("books differ: serial %d/%d, %d/%d members", a.Serial, b.Serial, len(a.Peers), len(b.Peers))
	}
	for i := range a.Peers {
		q, ok := b.PeerByName(a.Peers[i].Name)
		if !ok || !a.Peers[i].Equal(q) {
			t.Fatalf("member %s differs", a.Peers[i].Name)
		}
	}
}

func TestPushLoadForce(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	s := connect(t, "t/push")
	b := testBook(t, 3)
	if err := s.Push(ctx, b, nil, false); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := snap.Book(s.Target().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sameMembers(t, b, got)

	b2 := testBook(t, 2)
	b2.Serial = 7
	if err := s.Push(ctx, b2, nil, false); !errors.Is(err, ErrExists) {
		t.Fatalf("push over a stored book without force: %v, want ErrExists", err)
	}
	if err := s.Push(ctx, b2, nil, true); err != nil {
		t.Fatal(err)
	}
	snap, _ = s.Load(ctx)
	got, _, err = snap.Book(s.Target().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sameMembers(t, b2, got)
	if len(snap.Records) != 3 { // mesh and two members: the third is gone
		t.Fatalf("records after force push: %v", keysOf(snap.Records))
	}
}

func keysOf(r Records) []string { return r.keys() }

// A book larger than one transaction allows is written in several, the
// head last.
func TestPushLarge(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	s := connect(t, "t/large")
	b := testBook(t, 1000)
	if err := s.Push(ctx, b, nil, false); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := snap.Book(s.Target().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sameMembers(t, b, got)
}

// 20 writers adding a member each at the same time: every add lands, each
// with its own address, and the serial counts them all.
func TestConcurrentAdds(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	s := connect(t, "t/concurrent")
	if err := s.Push(ctx, testBook(t, 1), nil, false); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each writer has its own client, as separate machines would.
			w := connect(t, "t/concurrent")
			m := peerbook.Member{Name: fmt.Sprintf("new%02d", i), PublicKey: testKey(t)}
			_, errs[i] = w.Update(ctx, func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.AddMember(b, m) }, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	snap, _ := s.Load(ctx)
	b, _, err := snap.Book(s.Target().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Peers) != n+1 || b.Serial != n+1 {
		t.Fatalf("%d members, serial %d; want %d and %d", len(b.Peers), b.Serial, n+1, n+1)
	}
	seen := map[netip.Addr]string{}
	for _, p := range b.Peers {
		if other, ok := seen[p.Addresses[0]]; ok {
			t.Fatalf("%s and %s both got %s", p.Name, other, p.Addresses[0])
		}
		seen[p.Addresses[0]] = p.Name
	}
}

// A record changed behind wgmesh's back is refused: by the digest, and,
// with a matching head, by the checks of its content, named by its key.
func TestCorruptRecord(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	s := connect(t, "t/corrupt")
	b := testBook(t, 2)
	if err := s.Push(ctx, b, nil, false); err != nil {
		t.Fatal(err)
	}
	shown := s.Target().String()
	key := s.Target().Prefix + MemberKey("m0001")
	bad := "[[peer]]\nname = \"m0001\"\npublic_key = \"nope\"\naddresses = [\"10.42.0.2\"]\n"
	if _, err := s.Client().Put(ctx, key, bad); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Load(ctx)
	if _, _, err := snap.Book(shown, nil); !errors.Is(err, ErrDigest) {
		t.Fatalf("record changed without a head: %v, want ErrDigest", err)
	}
	// Make the head match: the content is still refused, at its record.
	h, _ := ParseHead(snap.Head)
	h.Digest = snap.Records.Digest()
	if _, err := s.Client().Put(ctx, s.Target().Prefix+HeadKey, string(h.Marshal())); err != nil {
		t.Fatal(err)
	}
	snap, _ = s.Load(ctx)
	_, _, err := snap.Book(shown, nil)
	var perr *peerbook.Error
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), shown+"/members/m0001:3: ") {
		t.Fatalf("bad key in a record: %v, want a problem at %s/members/m0001:3", err, shown)
	}
	// A record that smuggles in another part of the book is refused.
	for _, v := range []string{
		"[[peer]]\nname = \"m0001\"\npublic_key = \"" + b.Peers[1].PublicKey.String() + "\"\naddresses = [\"10.42.0.2\"]\n[mesh]\nmtu = 9000\n",
		"serial = 99\n[[peer]]\nname = \"m0001\"\n",
		"[[peer]]\nname = \"other\"\npublic_key = \"" + b.Peers[1].PublicKey.String() + "\"\naddresses = [\"10.42.0.2\"]\n",
	} {
		r := Records{}
		for k, x := range snap.Records {
			r[k] = x
		}
		r[MemberKey("m0001")] = []byte(v)
		_, _, err := Assemble(shown, Head{Serial: 2, Digest: r.Digest()}, r)
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), shown+"/members/m0001: ") {
			t.Errorf("record %q: %v, want refused at its key", v, err)
		}
	}
}

// Update refuses to write a change without a signer over a signed book,
// and a conflict in the middle of an update is retried, never lost.
func TestUpdateRetriesConflict(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	s := connect(t, "t/conflict")
	if err := s.Push(ctx, testBook(t, 1), nil, false); err != nil {
		t.Fatal(err)
	}
	calls := 0
	nb, err := s.Update(ctx, func(b *peerbook.Book) (*peerbook.Book, error) {
		calls++
		if calls == 1 {
			// Another writer gets in first.
			other := connect(t, "t/conflict")
			m := peerbook.Member{Name: "first", PublicKey: testKey(t)}
			if _, err := other.Update(ctx, func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.AddMember(b, m) }, nil); err != nil {
				t.Error(err)
			}
		}
		return peerbook.AddMember(b, peerbook.Member{Name: "second", PublicKey: testKey(t)})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || len(nb.Peers) != 3 || nb.Serial != 3 {
		t.Fatalf("calls %d, %d members, serial %d; want 2, 3, 3", calls, len(nb.Peers), nb.Serial)
	}
	if _, ok := nb.PeerByName("first"); !ok {
		t.Fatal("the other writer's member was lost")
	}
}
