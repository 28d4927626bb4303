package node_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// twoMembers is a book of alpha (10.42.0.1) and beta (10.42.0.2), without
// endpoints: the examples start both in this process on ports the system
// picks, then publish those.
func twoMembers(alpha, beta peerbook.Key) *peerbook.Book {
	book, err := peerbook.Parse("book.toml", []byte(fmt.Sprintf(`
format = 1
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
`, alpha, beta)))
	if err != nil {
		log.Fatal(err)
	}
	return book
}

// startOnLoopback starts a node for each key on a port the system picks,
// then reloads every node with a book whose endpoints are those ports on
// 127.0.0.1, as an operator would publish them.
func startOnLoopback(ctx context.Context, book *peerbook.Book, keys ...peerbook.PrivateKey) []*node.Node {
	var nodes []*node.Node
	published := *book
	published.Serial++
	published.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i, k := range keys {
		n, err := node.New(node.Config{Book: book, PrivateKey: k, ListenPort: node.EphemeralPort})
		if err != nil {
			log.Fatal(err)
		}
		if err := n.Up(ctx); err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, n)
		published.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: n.Status().ListenPort}
	}
	for _, n := range nodes {
		if err := n.Reload(ctx, &published); err != nil {
			log.Fatal(err)
		}
	}
	return nodes
}

// Two members of one book, both in this process on loopback: beta serves
// a greeting on its mesh address, alpha dials beta by name.
func Example() {
	alphaKey, _ := peerbook.GeneratePrivateKey()
	betaKey, _ := peerbook.GeneratePrivateKey()
	book := twoMembers(alphaKey.Public(), betaKey.Public())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := startOnLoopback(ctx, book, alphaKey, betaKey)
	for _, n := range nodes {
		defer n.Close()
	}
	alpha, beta := nodes[0], nodes[1]

	ln, err := beta.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
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
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg, err := io.ReadAll(conn)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(msg))
	// Output: hello from beta
}

// Status lists every other member with what the device knows of it.
func ExampleNode_Status() {
	key, _ := peerbook.GeneratePrivateKey()
	other, _ := peerbook.GeneratePrivateKey()
	// beta's endpoint is a socket of this example's that never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer silent.Close()
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
endpoint = %q
`, key.Public(), other.Public(), silent.LocalAddr().String())))
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
		fmt.Println(p.Name, p.Addresses, p.EndpointSource, p.Path, p.Endpoint == silent.LocalAddr().String())
	}
	// Output:
	// alpha 3
	// beta [10.42.0.2] book no path true
}

// HTTPClient fetches from a member by name; ListenPacket and Dial carry UDP.
func ExampleNode_HTTPClient() {
	alphaKey, _ := peerbook.GeneratePrivateKey()
	betaKey, _ := peerbook.GeneratePrivateKey()
	book := twoMembers(alphaKey.Public(), betaKey.Public())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := startOnLoopback(ctx, book, alphaKey, betaKey)
	for _, n := range nodes {
		defer n.Close()
	}
	alpha, beta := nodes[0], nodes[1]

	// beta serves HTTP on its mesh address.
	ln, err := beta.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "beta serves %s", r.URL.Path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	req, err := http.NewRequestWithContext(ctx, "GET", "http://beta.mesh/hello", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := alpha.HTTPClient().Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
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
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping over udp")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf[:n]))
	// Output:
	// beta serves /hello
	// ping over udp
}
