package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// TestEmbeddedPingPong runs the -book client against an echo that a
// second member in this process serves on its mesh address: the round
// trips go through both members' stacks and WireGuard over loopback.
func TestEmbeddedPingPong(t *testing.T) {
	dir := t.TempDir()
	book := &peerbook.Book{Format: 1, Mesh: peerbook.Mesh{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, ListenPort: 51820, MTU: 1420}}
	var keys [2]peerbook.PrivateKey
	for i, name := range []string{"alpha", "beta"} {
		keys[i], _ = peerbook.GeneratePrivateKey()
		if err := peerbook.WriteKeyFile(filepath.Join(dir, name+".key"), keys[i]); err != nil {
			t.Fatal(err)
		}
		book.Peers = append(book.Peers, peerbook.Peer{Name: name, PublicKey: keys[i].Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// beta binds a free port first; the book the client loads says where.
	beta, err := node.New(node.Config{Book: book, PrivateKey: keys[1], ListenPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := beta.Up(ctx); err != nil {
		t.Fatal(err)
	}
	defer beta.Close()
	ln, err := beta.Listen("tcp", ":5300")
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) { io.Copy(c, c) })
	port := beta.Status().ListenPort
	book.Peers[1].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: port}
	book.Peers[1].ListenPort = port
	bookPath := filepath.Join(dir, "book.toml")
	if err := os.WriteFile(bookPath, peerbook.Marshal(book), 0o644); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := runEmbedded("10.42.0.2:5300", 50, bookPath, filepath.Join(dir, "alpha.key"), -1, &out); err != nil {
		t.Fatal(err)
	}
	var p50, p99 float64
	if _, err := fmt.Sscanf(strings.TrimSpace(out.String()), "%f %f", &p50, &p99); err != nil || p50 <= 0 || p99 < p50 {
		t.Fatalf("output %q: want \"p50 p99\" in microseconds, p99 >= p50 > 0 (%v)", out.String(), err)
	}

	t.Logf("p50 %.1f µs, p99 %.1f µs over 50 round trips", p50, p99)

	// A key the book does not hold is an error.
	other, _ := peerbook.GeneratePrivateKey()
	otherPath := filepath.Join(dir, "other.key")
	peerbook.WriteKeyFile(otherPath, other)
	if err := runEmbedded("10.42.0.2:5300", 1, bookPath, otherPath, -1, io.Discard); err == nil {
		t.Fatal("a key that is not in the book: no error")
	}
	if err := runEmbedded("10.42.0.2:5300", 1, bookPath, "", -1, io.Discard); err == nil || !strings.Contains(err.Error(), "-key") {
		t.Fatalf("no -key: %v, want an error naming -key", err)
	}
}
