// Command live shows the wgmesh daemon embedded in a Go program: it joins
// the mesh from a peer book that it follows live (a file, watched, or an
// https:// URL, polled), serves a SOCKS5 proxy into the mesh on loopback,
// and prints every book version it applies, until SIGINT or SIGTERM.
//
//	go run ./examples/live --book book.toml --key alpha.key --socks 127.0.0.1:1080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/wgmesh/wgmesh/daemon"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "live:", err)
		os.Exit(1)
	}
}

// run follows the book until ctx ends, writing one line per applied
// version to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("live", flag.ContinueOnError)
	book := fs.String("book", "", "peer book `FILE` or https:// URL")
	key := fs.String("key", "", "private key `FILE` (mode 0600)")
	socks := fs.String("socks", "", "serve a SOCKS5 proxy into the mesh on this loopback `ADDR`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *book == "" || *key == "" {
		return errors.New("need --book and --key")
	}

	d, err := daemon.New(daemon.Config{
		Book:    *book,
		KeyFile: *key,
		SOCKS:   *socks,
		Node:    node.Config{ListenPort: node.EphemeralPort},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnReload: func(b *peerbook.Book, err error) {
			if err != nil {
				fmt.Fprintln(out, "refused, still running the last good book:", err)
				return
			}
			fmt.Fprintf(out, "applied serial %d: %d members\n", b.Serial, len(b.Peers))
		},
	})
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	b := d.Node().Book()
	fmt.Fprintf(out, "up as %s, serial %d: %d members\n", d.Node().Status().Name, b.Serial, len(b.Peers))
	if a := d.Addrs()["socks"]; a != "" {
		fmt.Fprintln(out, "socks5 on", a)
	}

	select {
	case <-ctx.Done():
	case <-d.Done(): // a service failed
	}
	return d.Close()
}
