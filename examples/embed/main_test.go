package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// TestEmbedServeAndGet runs the example twice in one process: alpha
// serves, beta fetches from alpha by name.
func TestEmbedServeAndGet(t *testing.T) {
	dir := t.TempDir()
	var keys [2]peerbook.PrivateKey
	book := &peerbook.Book{Format: 1, Mesh: peerbook.Mesh{Domain: "mesh",
		Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, ListenPort: 51820, MTU: 1420, PersistentKeepalive: 25}}
	for i, name := range []string{"alpha", "beta"} {
		keys[i], _ = peerbook.GeneratePrivateKey()
		if err := peerbook.WriteKeyFile(filepath.Join(dir, name+".key"), keys[i]); err != nil {
			t.Fatal(err)
		}
		book.Peers = append(book.Peers, peerbook.Peer{Name: name, PublicKey: keys[i].Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})}})
	}
	// alpha binds a free port first; the book then says where it is.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bookPath := filepath.Join(dir, "book.toml")
	os.WriteFile(bookPath, peerbook.Marshal(book), 0o644)
	ready := make(chan *node.Node, 1)
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"--book", bookPath, "--key", filepath.Join(dir, "alpha.key"), "--listen-port", "-1", "--serve", ":80"}, &bytes.Buffer{}, ready)
	}()
	var alpha *node.Node
	select {
	case alpha = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	book.Peers[0].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: alpha.Status().ListenPort}
	book.Peers[0].ListenPort = book.Peers[0].Endpoint.Port
	os.WriteFile(bookPath, peerbook.Marshal(book), 0o644)
	loaded, err := peerbook.Load(bookPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := alpha.Reload(ctx, loaded); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := run(ctx, []string{"--book", bookPath, "--key", filepath.Join(dir, "beta.key"), "--listen-port", "-1", "--get", "http://alpha/"}, &out, nil); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "hello from alpha, you are 10.42.0.2:") {
		t.Errorf("got %q", got)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}
