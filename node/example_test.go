package node_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Two members of one book, both in this process on loopback: beta serves
// a greeting on its mesh address, alpha dials beta by name.
func Example() {
	alphaKey, _ := peerbook.GeneratePrivateKey()
	betaKey, _ := peerbook.GeneratePrivateKey()
	text := fmt.Sprintf(`
format = 1
[mesh]
networks = ["10.42.0.0/24"]

[[peer]]
name = "alpha"
public_key = %q
addresses = ["10.42.0.1"]
endpoint = "127.0.0.1:51901"

[[peer]]
name = "beta"
public_key = %q
addresses = ["10.42.0.2"]
endpoint = "127.0.0.1:51902"
`, alphaKey.Public(), betaKey.Public())
	book, err := peerbook.Parse("book.toml", []byte(text))
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	alpha, err := node.New(node.Config{Book: book, PrivateKey: alphaKey})
	if err != nil {
		log.Fatal(err)
	}
	beta, err := node.New(node.Config{Book: book, PrivateKey: betaKey})
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range []*node.Node{alpha, beta} {
		if err := n.Up(ctx); err != nil {
			log.Fatal(err)
		}
		defer n.Close()
	}

	ln, err := beta.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "hello from beta")
		c.Close()
	}()

	conn, err := alpha.Dial(ctx, "tcp", "beta:80")
	if err != nil {
		log.Fatal(err)
	}
	msg, _ := io.ReadAll(conn)
	fmt.Println(string(msg))
	// Output: hello from beta
}

// Status lists every other member with what the device knows of it.
func ExampleNode_Status() {
	key, _ := peerbook.GeneratePrivateKey()
	other, _ := peerbook.GeneratePrivateKey()
	book, err := peerbook.Parse("book.toml", []byte(fmt.Sprintf(`
format = 1
serial = 3
[mesh]
networks = ["10.42.0.0/24"]
[[peer]]
name = "alpha"
public_key = %q
addresses = ["10.42.0.1"]
[[peer]]
name = "beta"
public_key = %q
addresses = ["10.42.0.2"]
endpoint = "127.0.0.1:51903"
`, key.Public(), other.Public())))
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.New(node.Config{Book: book, PrivateKey: key, ListenPort: node.EphemeralPort})
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	st := n.Status()
	fmt.Println(st.Name, st.BookSerial)
	for _, p := range st.Peers {
		fmt.Println(p.Name, p.Addresses, p.Endpoint)
	}
	// Output:
	// alpha 3
	// beta [10.42.0.2] 127.0.0.1:51903
}

// HTTPClient fetches from a member by name; ListenPacket and Dial carry UDP.
func ExampleNode_HTTPClient() {
	alphaKey, _ := peerbook.GeneratePrivateKey()
	betaKey, _ := peerbook.GeneratePrivateKey()
	book, err := peerbook.Parse("book.toml", []byte(fmt.Sprintf(`
format = 1
[mesh]
networks = ["10.42.0.0/24"]
[[peer]]
name = "alpha"
public_key = %q
addresses = ["10.42.0.1"]
endpoint = "127.0.0.1:51904"
[[peer]]
name = "beta"
public_key = %q
addresses = ["10.42.0.2"]
endpoint = "127.0.0.1:51905"
`, alphaKey.Public(), betaKey.Public())))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	var nodes []*node.Node
	for _, k := range []peerbook.PrivateKey{alphaKey, betaKey} {
		n, err := node.New(node.Config{Book: book, PrivateKey: k})
		if err != nil {
			log.Fatal(err)
		}
		if err := n.Up(ctx); err != nil {
			log.Fatal(err)
		}
		defer n.Close()
		nodes = append(nodes, n)
	}
	alpha, beta := nodes[0], nodes[1]

	// beta serves HTTP on its mesh address.
	ln, err := beta.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "beta serves %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	resp, err := alpha.HTTPClient().Get("http://beta.mesh/hello")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	// UDP: beta echoes datagrams on port 7.
	pc, err := beta.ListenPacket("udp", "10.42.0.2:7")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	conn, err := alpha.Dial(ctx, "udp", "beta:7")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("ping over udp"))
	buf := make([]byte, 1500)
	n, _ := conn.Read(buf)
	fmt.Println(string(buf[:n]))
	// Output:
	// beta serves /hello
	// ping over udp
}
