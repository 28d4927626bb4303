package proxy_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

// A member serving a SOCKS5 and an HTTP proxy on loopback, so that curl,
// ssh or a browser on the host reach other members by name:
//
//	curl --socks5-hostname 127.0.0.1:1080 http://beta/
//	curl -x http://127.0.0.1:8080 http://beta.mesh/
func Example() {
	book, err := peerbook.Load("book.toml")
	if err != nil {
		log.Fatal(err)
	}
	key, err := peerbook.ReadKeyFile("alpha.key")
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.New(node.Config{Book: book, PrivateKey: key})
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	// Optional: require a user name and password (a 0600 file of
	// user:password lines); without it only loopback addresses pass.
	var creds *proxy.Credentials // proxy.LoadCredentials("socks.auth")
	if err := proxy.CheckListen("127.0.0.1:1080", creds != nil); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:1080")
	if err != nil {
		log.Fatal(err)
	}
	socks := &proxy.SOCKS5{Dialer: n, Book: n.Book, Auth: creds}
	go socks.Serve(ln)
	defer socks.Close()

	hp := &proxy.HTTP{Dialer: n, Book: n.Book, Auth: creds}
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: hp, ReadHeaderTimeout: 10 * time.Second}
	go srv.ListenAndServe()
	defer hp.Close()
	defer srv.Close()

	select {} // serve until the process ends
}
