// Package demo runs a three-member wgmesh mesh inside one process, on
// loopback, without root: the `wgmesh demo` command.
//
// It does what an operator does, on a small scale: generate keys, write a
// peer book, start every member, learn the ports they bound, publish the
// book again with endpoints, and reload every member. Then each member
// serves HTTP inside the mesh and fetches every other member by name.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Timeout bounds the whole demo.
const Timeout = 20 * time.Second

type member struct {
	name  string
	key   peerbook.PrivateKey
	addrs []string
	port  uint16 // bound UDP port, known once the node is up
	node  *node.Node
}

// Run starts the mesh, checks every ordered pair of members and writes a
// report to out. It fails, naming the pairs, if any pair cannot talk.
// log receives the nodes' logs; nil discards them. Everything it starts is
// stopped and its temporary directory removed before it returns.
func Run(ctx context.Context, out io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "wgmesh-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	bookPath := filepath.Join(dir, "book.toml")

	members := []*member{
		{name: "alpha", addrs: []string{"10.42.0.1", "fd42:42::1"}},
		{name: "beta", addrs: []string{"10.42.0.2", "fd42:42::2"}},
		{name: "gamma", addrs: []string{"10.42.0.3", "fd42:42::3"}},
	}
	for _, m := range members {
		if m.key, err = peerbook.GeneratePrivateKey(); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	fmt.Fprintf(out, "wgmesh demo: %d members on 127.0.0.1, netstack mode, book %s\n", len(members), bookPath)

	// First book: nobody knows where the others listen yet.
	book, err := publish(bookPath, 1, members)
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range members {
			if m.node != nil {
				m.node.Close()
			}
		}
	}()
	for _, m := range members {
		n, err := node.New(node.Config{
			Book:       book,
			PrivateKey: m.key,
			ListenPort: node.EphemeralPort,
			Logger:     log.With("member", m.name),
		})
		if err != nil {
			return fmt.Errorf("demo: %s: %w", m.name, err)
		}
		if err := n.Up(ctx); err != nil {
			return fmt.Errorf("demo: %s: %w", m.name, err)
		}
		m.node = n
		m.port = n.Status().ListenPort
	}

	// Second book: every member's endpoint is now known; republish it and
	// let every member apply the difference.
	if book, err = publish(bookPath, 2, members); err != nil {
		return err
	}
	for _, m := range members {
		if err := m.node.Reload(ctx, book); err != nil {
			return fmt.Errorf("demo: %s: reload: %w", m.name, err)
		}
	}

	for _, m := range members {
		ln, err := m.node.Listen("tcp", ":80")
		if err != nil {
			return fmt.Errorf("demo: %s: listen on mesh port 80: %w", m.name, err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, m.name)
			}),
			ReadHeaderTimeout: 5 * time.Second,
		}
		go srv.Serve(ln)
		defer srv.Close()
	}

	var failed []string
	for _, from := range members {
		client := &http.Client{Transport: &http.Transport{
			DialContext:       from.node.Dial,
			DisableKeepAlives: true,
		}}
		for _, to := range members {
			if from == to {
				continue
			}
			start := time.Now()
			err := fetch(ctx, client, to.name)
			took := time.Since(start)
			if err != nil {
				fmt.Fprintf(out, "%-5s -> %-5s  FAILED  %v\n", from.name, to.name, err)
				failed = append(failed, fmt.Sprintf("%s -> %s: %v", from.name, to.name, err))
				continue
			}
			fmt.Fprintf(out, "%-5s -> %-5s  ok  %.1fms\n", from.name, to.name, float64(took.Microseconds())/1000)
		}
	}

	now := time.Now()
	for _, m := range members {
		fmt.Fprintln(out)
		if err := control.WriteTable(out, m.node.Status(), now); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("demo: %d of %d pairs cannot talk: %s", len(failed),
			len(members)*(len(members)-1), strings.Join(failed, "; "))
	}
	fmt.Fprintf(out, "\nall %d pairs talk\n", len(members)*(len(members)-1))
	return nil
}

// fetch gets http://NAME/ and checks that the member answers with its
// name. The first request between two members also carries the WireGuard
// handshake; a lost datagram is retried by TCP inside the mesh, and the
// whole attempt is retried until ctx ends.
func fetch(ctx context.Context, client *http.Client, name string) error {
	var last error
	for {
		last = get(ctx, client, name)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(last, context.DeadlineExceeded) || errors.Is(last, context.Canceled) {
				return fmt.Errorf("no answer within the demo's %v timeout", Timeout)
			}
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, client *http.Client, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+name+"/", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // drop the repeated method and URL
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != name {
		return fmt.Errorf("answered %s %q, want 200 %q", resp.Status, body, name)
	}
	return nil
}

// publish writes the book for members to path and loads it back through
// the real parser. Members whose port is known get an endpoint on
// 127.0.0.1 and that port as listen_port.
func publish(path string, serial uint64, members []*member) (*peerbook.Book, error) {
	b := &peerbook.Book{
		Format: peerbook.CurrentFormat,
		Serial: serial,
		Mesh: peerbook.Mesh{
			Domain:              "mesh",
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
			PersistentKeepalive: 25,
		},
	}
	for _, m := range members {
		p := peerbook.Peer{Name: m.name, PublicKey: m.key.Public()}
		for _, a := range m.addrs {
			p.Addresses = append(p.Addresses, netip.MustParseAddr(a))
		}
		if m.port != 0 {
			p.Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: m.port}
			p.ListenPort = m.port
		}
		b.Peers = append(b.Peers, p)
	}
	if err := os.WriteFile(path, peerbook.Marshal(b), 0o644); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	book, err := peerbook.Load(path)
	if err != nil {
		return nil, fmt.Errorf("demo: generated book refused:\n%w", err)
	}
	return book, nil
}
