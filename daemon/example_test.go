package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/wgmesh/wgmesh/daemon"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Example embeds the daemon: it follows a book file and applies each new
// version to the running node.
func Example() {
	dir, err := os.MkdirTemp("", "wgmesh-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	book, key := exampleMesh(dir) // a book of one member, "alpha", and its key

	reloaded := make(chan *peerbook.Book, 1)
	d, err := daemon.New(daemon.Config{
		Book:    book,
		KeyFile: key,
		Node:    node.Config{ListenPort: node.EphemeralPort},
		OnReload: func(b *peerbook.Book, err error) {
			if err == nil {
				reloaded <- b
			}
		},
	})
	if err != nil {
		panic(err)
	}
	if err := d.Start(context.Background()); err != nil {
		panic(err)
	}
	defer d.Close()
	fmt.Println("running serial", d.Node().Book().Serial)

	addMember(book, "beta") // as an admin would, with `wgmesh book add`
	b := <-reloaded
	fmt.Println("applied serial", b.Serial, "with", len(d.Node().Book().Peers), "members")
	// Output:
	// running serial 1
	// applied serial 2 with 2 members
}

// exampleMesh writes a book of one member and its private key in dir.
func exampleMesh(dir string) (book, key string) {
	priv, err := peerbook.GeneratePrivateKey()
	if err != nil {
		panic(err)
	}
	book, key = filepath.Join(dir, "book.toml"), filepath.Join(dir, "alpha.key")
	if err := peerbook.WriteKeyFile(key, priv); err != nil {
		panic(err)
	}
	b := &peerbook.Book{Format: 1, Serial: 1, Mesh: peerbook.Mesh{Domain: "mesh",
		Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420, PersistentKeepalive: 25},
		Peers: []peerbook.Peer{{Name: "alpha", PublicKey: priv.Public(), Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1")}}}}
	replace(book, b)
	return book, key
}

// addMember adds a member to the book file and raises its serial.
func addMember(path, name string) {
	b, err := peerbook.Load(path)
	if err != nil {
		panic(err)
	}
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		panic(err)
	}
	b.Serial++
	b.Peers = append(b.Peers, peerbook.Peer{Name: name, PublicKey: k.Public(),
		Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(len(b.Peers) + 1)})}})
	replace(path, b)
}

// replace writes the book to a new file renamed over the old one, as
// editors do, so that the daemon never reads half a book.
func replace(path string, b *peerbook.Book) {
	if err := os.WriteFile(path+".new", peerbook.Marshal(b), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		panic(err)
	}
}
