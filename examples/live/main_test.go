package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// TestLiveFollowsBook runs the example on a book file, changes the book,
// and sees the change applied; its SOCKS5 proxy answers a greeting.
func TestLiveFollowsBook(t *testing.T) {
	dir := t.TempDir()
	priv, _ := peerbook.GeneratePrivateKey()
	keyPath, bookPath := filepath.Join(dir, "alpha.key"), filepath.Join(dir, "book.toml")
	if err := peerbook.WriteKeyFile(keyPath, priv); err != nil {
		t.Fatal(err)
	}
	book := &peerbook.Book{Format: 1, Serial: 1, Mesh: peerbook.Mesh{Domain: "mesh",
		Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420, PersistentKeepalive: 25},
		Peers: []peerbook.Peer{{Name: "alpha", PublicKey: priv.Public(), Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1")}}}}
	write := func() {
		if err := os.WriteFile(bookPath+".new", peerbook.Marshal(book), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bookPath+".new", bookPath); err != nil {
			t.Fatal(err)
		}
	}
	write()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out testutil.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--book", bookPath, "--key", keyPath, "--socks", "127.0.0.1:0"}, &out)
	}()
	wait := func(re *regexp.Regexp) []string {
		t.Helper()
		for {
			if m := re.FindStringSubmatch(out.String()); m != nil {
				return m
			}
			select {
			case err := <-done:
				t.Fatalf("live ended: %v; output:\n%s", err, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if ctx.Err() != nil {
				t.Fatalf("no %q in the output:\n%s", re, out.String())
			}
		}
	}
	wait(regexp.MustCompile(`up as alpha, serial 1: 1 members`))
	socks := wait(regexp.MustCompile(`socks5 on (\S+)`))[1]

	k, _ := peerbook.GeneratePrivateKey()
	book.Serial = 2
	book.Peers = append(book.Peers, peerbook.Peer{Name: "beta", PublicKey: k.Public(), Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.2")}})
	write()
	wait(regexp.MustCompile(`applied serial 2: 2 members`))

	c, err := net.DialTimeout("tcp", socks, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0}) // SOCKS5, one method: no authentication
	reply := make([]byte, 2)
	if _, err := io.ReadFull(c, reply); err != nil || !bytes.Equal(reply, []byte{5, 0}) {
		t.Errorf("SOCKS5 greeting answered %v, %v", reply, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("live: %v", err)
	}
}
