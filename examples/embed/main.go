// Command embed shows wgmesh used as a library: a Go program joins the
// mesh as one member, without root, serves HTTP on its mesh address and
// fetches from another member by name.
//
//	go run ./examples/embed --book book.toml --key alpha.key --serve :80
//	go run ./examples/embed --book book.toml --key beta.key --get http://alpha/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

// run joins the mesh, then serves (--serve) until ctx ends, or fetches one
// URL (--get) and returns. ready, if not nil, receives the node once up.
func run(ctx context.Context, args []string, out io.Writer, ready chan<- *node.Node) error {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	bookPath := fs.String("book", "", "peer book `FILE`")
	keyPath := fs.String("key", "", "private key `FILE` (mode 0600)")
	listenPort := fs.Int("listen-port", 0, "UDP `PORT` instead of the book's (-1: any free port)")
	serve := fs.String("serve", "", "serve HTTP on this mesh `ADDR`, e.g. :80")
	get := fs.String("get", "", "fetch this `URL` through the mesh, e.g. http://beta/")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bookPath == "" || *keyPath == "" || (*serve == "") == (*get == "") {
		return errors.New("need --book, --key and one of --serve or --get")
	}
	book, err := peerbook.Load(*bookPath)
	if err != nil {
		return err
	}
	key, err := peerbook.ReadKeyFile(*keyPath)
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		Book:       book,
		PrivateKey: key,
		ListenPort: *listenPort,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := n.Up(ctx); err != nil {
		return err
	}
	defer n.Close()
	if ready != nil {
		ready <- n
	}

	if *get != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *get, nil)
		if err != nil {
			return err
		}
		resp, err := n.HTTPClient().Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(out, resp.Body)
		return err
	}

	ln, err := n.Listen("tcp", *serve)
	if err != nil {
		return err
	}
	name := n.Status().Name
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s, you are %s\n", name, r.RemoteAddr)
	})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
