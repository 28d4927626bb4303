package bookedit

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

func newBook(t *testing.T) string {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "book.toml")
	_, err = Apply(Edit{
		Path: path,
		New:  &peerbook.Book{Format: peerbook.CurrentFormat, Mesh: peerbook.Mesh{Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}}},
		Change: func(b *peerbook.Book) (*peerbook.Book, error) {
			return peerbook.AddMember(b, peerbook.Member{Name: "a", PublicKey: k.Public()})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestApplyRefusals(t *testing.T) {
	path := newBook(t)
	before, _ := os.ReadFile(path)
	unchanged := func(t *testing.T) {
		t.Helper()
		if now, _ := os.ReadFile(path); !bytes.Equal(now, before) {
			t.Fatal("a refused change wrote the book")
		}
	}
	t.Run("missing book without New", func(t *testing.T) {
		_, err := Apply(Edit{Path: path + ".missing", Change: func(b *peerbook.Book) (*peerbook.Book, error) { return b, nil }})
		if !errors.Is(err, ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("change refused", func(t *testing.T) {
		_, err := Apply(Edit{Path: path, Change: func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.RemoveMember(b, "a") }})
		if err == nil || !strings.Contains(err.Error(), "not changed: member \"a\" is the only member") {
			t.Fatalf("err = %v", err)
		}
		unchanged(t)
	})
	t.Run("signed book needs a signer", func(t *testing.T) {
		if err := os.WriteFile(path+SigSuffix, []byte("sig"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path + SigSuffix)
		k, _ := peerbook.GeneratePrivateKey()
		_, err := Apply(Edit{Path: path, Change: func(b *peerbook.Book) (*peerbook.Book, error) {
			return peerbook.AddMember(b, peerbook.Member{Name: "b", PublicKey: k.Public()})
		}})
		if !errors.Is(err, ErrNeedsSigner) {
			t.Fatalf("err = %v, want ErrNeedsSigner", err)
		}
		unchanged(t)
	})
}

func TestApplyRaisesSerial(t *testing.T) {
	path := newBook(t)
	k, _ := peerbook.GeneratePrivateKey()
	res, err := Apply(Edit{Path: path, Change: func(b *peerbook.Book) (*peerbook.Book, error) {
		return peerbook.AddMember(b, peerbook.Member{Name: "b", PublicKey: k.Public()})
	}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.Serial != res.Book.Serial || b.Serial != 2 || len(b.Peers) != 2 {
		t.Fatalf("book on disk: serial %d, %d members; result serial %d", b.Serial, len(b.Peers), res.Book.Serial)
	}
}
