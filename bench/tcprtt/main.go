// Command tcprtt measures the round-trip time of 1-byte TCP ping-pong, for
// bench/netstack_pair.sh.
//
//	tcprtt -serve ADDR            echo every byte back
//	tcprtt -to ADDR [-n 2000]     print p50 and p99 in microseconds
//	tcprtt -to ADDR -book FILE -key FILE [-listen-port N]
//	                              the same from a mesh member in this
//	                              process (the Go API), dialing ADDR
//	                              through its stack
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

func main() {
	serve := flag.String("serve", "", "listen on this address and echo")
	to := flag.String("to", "", "ping this address")
	n := flag.Int("n", 2000, "round trips")
	book := flag.String("book", "", "with -to: join the mesh in this process with this peer book and dial through it")
	key := flag.String("key", "", "with -book: this member's private key file")
	listenPort := flag.Int("listen-port", 0, "with -book: UDP port instead of the book's")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = runServer(*serve)
	case *to != "" && *book != "":
		err = runEmbedded(*to, *n, *book, *key, *listenPort, os.Stdout)
	case *to != "":
		err = runClient(*to, *n, func() (net.Conn, error) { return net.DialTimeout("tcp", *to, 10*time.Second) }, os.Stdout)
	default:
		err = fmt.Errorf("give -serve or -to")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcprtt:", err)
		os.Exit(1)
	}
}

func runServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// runEmbedded joins the mesh as the book's member for key, in this
// process, and pings addr through the node's own stack: no loopback
// connection and no relay on this side.
func runEmbedded(addr string, n int, bookPath, keyPath string, listenPort int, out io.Writer) error {
	if keyPath == "" {
		return fmt.Errorf("-book needs -key")
	}
	book, err := peerbook.Load(bookPath)
	if err != nil {
		return err
	}
	key, err := peerbook.ReadKeyFile(keyPath)
	if err != nil {
		return err
	}
	nd, err := node.New(node.Config{
		Book:       book,
		PrivateKey: key,
		ListenPort: listenPort,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := nd.Up(ctx); err != nil {
		return err
	}
	defer nd.Close()
	return runClient(addr, n, func() (net.Conn, error) {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		return nd.Dial(dctx, "tcp", addr)
	}, out)
}

// runClient pings through the conn dial returns and writes p50 and p99 in
// microseconds to out.
func runClient(addr string, n int, dial func() (net.Conn, error), out io.Writer) error {
	if n < 1 || n > 1_000_000 {
		return fmt.Errorf("-n %d: want 1..1000000", n)
	}
	c, err := dial()
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	b := []byte{1}
	rtts := make([]time.Duration, 0, n)
	// A few unmeasured round trips settle the path first.
	for i := -10; i < n; i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if i >= 0 {
			rtts = append(rtts, time.Since(t0))
		}
	}
	slices.Sort(rtts)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	_, err = fmt.Fprintf(out, "%.1f %.1f\n", us(rtts[len(rtts)/2]), us(rtts[len(rtts)*99/100]))
	return err
}
