package booksource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/etcdtest"
	"github.com/wgmesh/wgmesh/peerbook"
)

// etcdShared is the package's cluster, started by the first test that
// needs it.
var etcdShared = etcdtest.Shared{Name: "booksource"}

func TestMain(m *testing.M) { os.Exit(etcdShared.Run(m)) }

// needEtcd returns the package's cluster; without etcd the test skips (fails
// on CI).
func needEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	return etcdShared.Need(t)
}

func etcdStore(t *testing.T, name string) *etcdbook.Store {
	t.Helper()
	tg, err := etcdbook.ParseURL(needEtcd(t).URL(fmt.Sprintf("bs/%s-%d", name, time.Now().UnixNano())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdbook.Connect(tg, etcdbook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func parsed(t *testing.T, text []byte) *peerbook.Book {
	t.Helper()
	b, err := peerbook.Parse("test", text)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addMember(t *testing.T, s *etcdbook.Store, signer ssh.Signer, name string) *peerbook.Book {
	t.Helper()
	k, _ := peerbook.GeneratePrivateKey()
	nb, err := s.Update(context.Background(), func(b *peerbook.Book) (*peerbook.Book, error) {
		return peerbook.AddMember(b, peerbook.Member{Name: name, PublicKey: k.Public()})
	}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return nb
}

// A signed book in etcd: each version's head is verified, a head signed
// by another key or none is refused, a rollback to an older signed
// version is refused, and the running book stays meanwhile.
func TestWatchEtcdSigned(t *testing.T) {
	s := etcdStore(t, "signed")
	signer := newSigner(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Push(ctx, parsed(t, makeBook(1, 0)), signer, false); err != nil {
		t.Fatal(err)
	}
	opts := Options{TrustedSigners: allowedFor(t, "admin", signer), StateDir: t.TempDir(), Logger: testLogger(t)}
	first, ch, err := WatchEtcd(ctx, opts, EtcdOptions{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	if first.Book.Serial != 1 || first.Signer != "admin" {
		t.Fatalf("first: serial %d signer %q", first.Book.Serial, first.Signer)
	}
	addMember(t, s, signer, "third")
	if u := recvBook(t, ch); u.Book.Serial != 2 || len(u.Book.Peers) != 3 {
		t.Fatalf("after add: serial %d, %d members", u.Book.Serial, len(u.Book.Peers))
	}
	old, _ := s.Load(ctx)

	// Signed by a key that is not trusted.
	addMember(t, s, newSigner(t), "fourth")
	if u := recvErr(t, ch); !strings.Contains(u.Err.Error(), "head.sig") {
		t.Fatalf("untrusted signer: %v", u.Err)
	}
	// Unsigned.
	if _, err := s.Client().Delete(ctx, s.Target().Prefix+etcdbook.HeadSigKey); err != nil {
		t.Fatal(err)
	}
	if u := recvErr(t, ch); !errors.Is(u.Err, booksign.ErrNoSignature) {
		t.Fatalf("unsigned: %v", u.Err)
	}
	// The whole older version, validly signed, put back: a rollback.
	addMember(t, s, signer, "fifth") // serial 4, accepted
	if u := recvBook(t, ch); u.Book.Serial != 4 {
		t.Fatalf("serial %d", u.Book.Serial)
	}
	restore(t, s, old)
	if u := recvErr(t, ch); !errors.Is(u.Err, ErrStaleSerial) {
		t.Fatalf("rollback: %v", u.Err)
	}
	// The admin repairs it with a higher serial.
	if err := s.Push(ctx, parsed(t, makeBook(10, 0)), signer, true); err != nil {
		t.Fatal(err)
	}
	if u := recvBook(t, ch); u.Book.Serial != 10 {
		t.Fatalf("repair: serial %d", u.Book.Serial)
	}
	// A record changed under a validly signed head.
	addMember(t, s, signer, "sixth")
	recvBook(t, ch)
	if _, err := s.Client().Put(ctx, s.Target().Prefix+etcdbook.MemberKey("sixth"), "[[peer]]\nname = \"sixth\"\npublic_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\naddresses = [\"10.42.0.99\"]\n"); err != nil {
		t.Fatal(err)
	}
	if u := recvErr(t, ch); !errors.Is(u.Err, etcdbook.ErrDigest) {
		t.Fatalf("record changed under a signed head: %v", u.Err)
	}
	expectClosed(t, cancel, ch)
}

// restore puts back every record and the head of an older snapshot in
// one transaction, as an attacker with write access to etcd could.
func restore(t *testing.T, s *etcdbook.Store, snap *etcdbook.Snapshot) {
	t.Helper()
	ctx := context.Background()
	p := s.Target().Prefix
	if _, err := s.Client().Delete(ctx, p+etcdbook.MembersDir, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	for k, v := range snap.Records {
		if _, err := s.Client().Put(ctx, p+k, string(v)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client().Put(ctx, p+etcdbook.HeadSigKey, string(snap.HeadSig)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Put(ctx, p+etcdbook.HeadKey, string(snap.Head)); err != nil {
		t.Fatal(err)
	}
}

// A node starting while etcd cannot be reached starts from the cache of
// its last good book, and follows etcd once it answers.
func TestWatchEtcdCache(t *testing.T) {
	s := etcdStore(t, "cache")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Push(ctx, parsed(t, makeBook(3, 0)), nil, false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := Options{StateDir: dir, Logger: testLogger(t)}
	wctx, wcancel := context.WithCancel(ctx)
	first, ch, err := WatchEtcd(wctx, opts, EtcdOptions{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	expectClosed(t, wcancel, ch)
	if _, err := os.Stat(filepath.Join(dir, CachedEtcdBook)); err != nil {
		t.Fatal(err)
	}

	// A store whose endpoint answers nothing: a loopback address where
	// no etcd runs.
	tg, _ := etcdbook.ParseURL("etcd://127.0.0.1:1/" + strings.Trim(s.Target().Prefix, "/"))
	dead, err := etcdbook.Connect(tg, etcdbook.Options{DialTimeout: 200 * time.Millisecond, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	u, ch2, err := WatchEtcd(ctx, opts, EtcdOptions{Store: dead, StartTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !u.FromCache || u.Book.Serial != first.Book.Serial {
		t.Fatalf("start while etcd is down: from cache %v, serial %d", u.FromCache, u.Book.Serial)
	}
	expectQuiet(t, ch2)

	// Without a cache, no start.
	if _, _, err := WatchEtcd(ctx, Options{StateDir: t.TempDir()}, EtcdOptions{Store: dead, StartTimeout: 300 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "no cached book") {
		t.Fatalf("no cache: %v", err)
	}
}

// A book written in several transactions (a push of a large book) is not
// refused while its records arrive: the head commits it.
func TestWatchEtcdLargePushSettles(t *testing.T) {
	s := etcdStore(t, "large")
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Push(ctx, parsed(t, makeBook(1, 0)), nil, false); err != nil {
		t.Fatal(err)
	}
	_, ch, err := WatchEtcd(ctx, Options{Logger: testLogger(t)}, EtcdOptions{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	big := parsed(t, makeBook(2, 0))
	for i := 0; i < 200; i++ {
		k, _ := peerbook.GeneratePrivateKey()
		var err error
		if big, err = peerbook.AddMember(big, peerbook.Member{Name: fmt.Sprintf("x%03d", i), PublicKey: k.Public()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Push(ctx, big, nil, true); err != nil {
		t.Fatal(err)
	}
	u := recv(t, ch)
	if u.Err != nil || len(u.Book.Peers) != len(big.Peers) {
		t.Fatalf("large push: %v", u.Err)
	}
	expectClosed(t, cancel, ch)
}
