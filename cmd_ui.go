package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/proxy"
	"github.com/wgmesh/wgmesh/ui"
)

// defaultUIListen is where `wgmesh ui` listens without --listen.
const defaultUIListen = "127.0.0.1:8420"

// uiLimits bound the page's connections: a handful of admins' browsers.
var uiLimits = netutil.Limits{Total: 64, PerClient: 32}

func (e *env) uiCommand() *cli.Command {
	cmd := &cli.Command{
		Name:  "ui",
		Usage: "serve a web page of the mesh: members, a node's live view, add/change/remove members",
		Description: "Serves the members of BOOK, the live view of the node at --control, and forms that\n" +
			"change the book with the code of book add/remove/set. Listens on loopback unless told\n" +
			"otherwise; any other address needs --auth-file. The bound address is logged (ui=URL).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "book", Usage: "peer book `FILE` or etcd://HOST:PORT[,...]/PREFIX to show and change (required); in etcd, the page also shows the mesh matrix"},
			&cli.StringFlag{Name: "listen", Value: defaultUIListen, Usage: "`ADDR` to serve the page on (port 0 picks one); not loopback only with --auth-file"},
			&cli.StringFlag{Name: "control", Usage: "control socket `PATH` of a running node, for its live view"},
			&cli.StringFlag{Name: "auth-file", Usage: "`FILE` of user:password lines (mode 0600): every request needs HTTP Basic auth"},
			&cli.StringFlag{Name: "sign-key", Usage: "sign every change with this SSH private key `FILE` (writes BOOK.sig); needed when BOOK.sig exists"},
		},
		Action: e.uiServe,
	}
	cmd.Flags = append(cmd.Flags, etcdFlags()...)
	cmd.Flags = append(cmd.Flags, &cli.BoolFlag{Name: "allow-http", Usage: "for an etcd:// book: allow plain http to an etcd that is not on loopback"})
	return cmd
}

func (e *env) uiServe(c *cli.Context) error {
	if _, err := args(c); err != nil {
		return err
	}
	book, err := requiredFlag(c, "book", "FILE")
	if err != nil {
		return err
	}
	if err := checkEtcdFlags(c, book); err != nil {
		return err
	}
	var signer ssh.Signer
	if path := c.String("sign-key"); path != "" {
		if signer, err = booksign.LoadSigner(path); err != nil {
			return fmt.Errorf("--sign-key: %w", err)
		}
	}
	srv := &ui.Server{Title: book, Logger: e.log}
	switch {
	case etcdbook.IsURL(book):
		s, err := openEtcd(book, etcdOptions(c))
		if err != nil {
			return fmt.Errorf("--book: %w", err)
		}
		defer s.Close()
		es := &ui.EtcdStore{Etcd: s, Signer: signer}
		srv.Store, srv.Views, srv.Title = es, es, s.Target().String()
	case strings.Contains(book, "://"):
		return usagef("ui --book %s: give a book file's path or an etcd://HOST:PORT/PREFIX address", book)
	default:
		srv.Store = &ui.FileStore{Path: book, Signer: signer, Note: func(s string) { e.log.Warn(s) }}
	}
	lctx, cancel := context.WithTimeout(c.Context, etcdTimeout)
	_, err = srv.Store.Load(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("--book: %w", err)
	}
	if path := c.String("auth-file"); path != "" {
		if srv.Auth, err = proxy.LoadCredentials(path); err != nil {
			return fmt.Errorf("--auth-file: %w", err)
		}
	}
	listen := c.String("listen")
	if err := proxy.CheckListenFlag("--listen", "--auth-file", listen, srv.Auth != nil); err != nil {
		return usageError{err}
	}
	if path := c.String("control"); path != "" {
		srv.Status = control.NewClient(path)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	hs := netutil.NewHTTPServer(srv, 0)
	done := make(chan error, 1)
	go func() { done <- hs.Serve(netutil.LimitListener(ln, uiLimits, netutil.NewRateLog(e.log, 0))) }()
	e.log.Info("serving the page", "ui", "http://"+ln.Addr().String()+"/", "book", srv.Title,
		"control", c.String("control"), "auth", srv.Auth != nil, "signing", signer != nil, "matrix", srv.Views != nil)
	select {
	case err := <-done:
		return err
	case <-c.Context.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
