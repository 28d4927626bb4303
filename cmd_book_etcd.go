package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/daemon"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// A book in etcd (etcd://HOST:PORT[,HOST:PORT...]/PREFIX) is accepted by
// every book command; book push and book pull move a book between a file
// and etcd. Changes run as etcd transactions (etcdbook.Store.Update).

// etcdTimeout bounds one command's work with etcd, retries included.
const etcdTimeout = time.Minute

// etcdFlags are the options of a connection to etcd.
func etcdFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "etcd-ca", Usage: "for an etcd:// book: connect with TLS, trusting the CA certificates in PEM `FILE`"},
		&cli.StringFlag{Name: "etcd-cert", Usage: "for an etcd:// book: TLS client certificate PEM `FILE` (with --etcd-key)"},
		&cli.StringFlag{Name: "etcd-key", Usage: "for an etcd:// book: TLS client key PEM `FILE` (mode 0600)"},
		&cli.StringFlag{Name: "etcd-auth-file", Usage: "for an etcd:// book: `FILE` with one user:password line for etcd's authentication (mode 0600)"},
	}
}

// etcdBookCommands are the book subcommands that take an etcd:// book and
// so the etcd flags.
var etcdBookCommands = []string{"check", "export", "add", "remove", "set", "push", "pull"}

// withEtcdFlags adds the etcd flags (and --allow-http) to the commands
// named in etcdBookCommands.
func withEtcdFlags(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		if slices.Contains(etcdBookCommands, c.Name) {
			c.Flags = append(c.Flags, etcdFlags()...)
			c.Flags = append(c.Flags, &cli.BoolFlag{Name: "allow-http", Usage: "for an etcd:// book: allow plain http to an etcd that is not on loopback"})
		}
	}
	return cmds
}

func (e *env) bookEtcdCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "push",
			Usage:     "store a book file in etcd (refuses to replace a stored book without --force)",
			ArgsUsage: "FILE etcd://HOST:PORT[,HOST:PORT...]/PREFIX",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "force", Usage: "replace the book stored under PREFIX"},
				&cli.StringFlag{Name: "sign-key", Usage: "sign the stored book with this SSH private key `FILE` (for nodes with --trusted-signers)"},
			},
			Action: e.bookPush,
		},
		{
			Name:      "pull",
			Usage:     "print a book stored in etcd as a normal TOML book",
			ArgsUsage: "etcd://HOST:PORT[,HOST:PORT...]/PREFIX",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "write the book to `FILE` (never overwriting) instead of printing it"},
				&cli.StringFlag{Name: "trusted-signers", Usage: "accept the book only with a signature by a key in this allowed_signers `FILE`"},
			},
			Action: e.bookPull,
		},
	}
}

// etcdOptions reads the etcd flags of c.
func etcdOptions(c *cli.Context) etcdbook.Options {
	return etcdbook.Options{
		CAFile:    c.String("etcd-ca"),
		CertFile:  c.String("etcd-cert"),
		KeyFile:   c.String("etcd-key"),
		AuthFile:  c.String("etcd-auth-file"),
		AllowHTTP: c.Bool("allow-http"),
	}
}

// checkEtcdFlags refuses etcd flags for a book that is not in etcd.
func checkEtcdFlags(c *cli.Context, book string) error {
	if etcdbook.IsURL(book) {
		return nil
	}
	for _, f := range []string{"etcd-ca", "etcd-cert", "etcd-key", "etcd-auth-file"} {
		if c.IsSet(f) {
			return usagef("--%s applies to an etcd:// book, not to %s", f, book)
		}
	}
	return nil
}

// openEtcd connects to the book at url, naming the flags in errors.
func openEtcd(url string, o etcdbook.Options) (*etcdbook.Store, error) {
	t, err := etcdbook.ParseURL(url)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, usagef("--etcd-cert and --etcd-key go together")
	}
	s, err := etcdbook.Connect(t, o)
	if err != nil {
		if !o.AllowHTTP && o.CAFile == "" && o.CertFile == "" {
			return nil, fmt.Errorf("%w (--etcd-ca FILE for TLS, or --allow-http)", err)
		}
		return nil, err
	}
	return s, nil
}

// loadAnyBook loads the book at path: a file, or a book in etcd.
func (e *env) loadAnyBook(c *cli.Context, path string) (*peerbook.Book, error) {
	if err := checkEtcdFlags(c, path); err != nil {
		return nil, err
	}
	if !etcdbook.IsURL(path) {
		return loadBook(path)
	}
	b, _, err := loadEtcdBook(path, etcdOptions(c), nil)
	return b, err
}

func loadEtcdBook(url string, o etcdbook.Options, signers *booksign.AllowedSigners) (*peerbook.Book, string, error) {
	s, err := openEtcd(url, o)
	if err != nil {
		return nil, "", err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, "", err
	}
	b, signer, err := snap.Book(s.Target().String(), signers)
	if err != nil {
		return nil, "", daemon.BookRefused(s.Target().String(), err)
	}
	return b, signer, nil
}

// runEtcdEdit is runEdit for a book in etcd: the change runs in a
// transaction, again if another writer got in first.
func (e *env) runEtcdEdit(ed *bookEdit) (*peerbook.Book, error) {
	s, err := openEtcd(ed.path, ed.etcd)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if ed.signer == nil && ed.signKey != "" {
		if ed.signer, err = booksign.LoadSigner(ed.signKey); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	undo := func() {}
	if ed.hook != nil {
		if undo, err = ed.hook(nil, nil, nil); err != nil {
			return nil, fmt.Errorf("%s not changed: %w", ed.path, err)
		}
	}
	var nb *peerbook.Book
	if len(ed.networks) > 0 {
		nb, err = e.createEtcdBook(ctx, s, ed)
	} else {
		nb, err = s.Update(ctx, ed.change, ed.signer)
		if errors.Is(err, etcdbook.ErrSigned) {
			err = fmt.Errorf("%w; give --sign-key SSH_PRIVATE_KEY to sign it", err)
		}
	}
	if err != nil {
		undo()
		return nil, bookedit.Refused(ed.path, err)
	}
	ed.signed = ed.signer != nil
	return nb, nil
}

// createEtcdBook starts a new book in etcd whose first member the change
// adds.
func (e *env) createEtcdBook(ctx context.Context, s *etcdbook.Store, ed *bookEdit) (*peerbook.Book, error) {
	nb, err := ed.change(&peerbook.Book{
		Format: peerbook.CurrentFormat,
		Source: ed.path,
		Mesh: peerbook.Mesh{
			Domain:              peerbook.DefaultDomain,
			Networks:            ed.networks,
			ListenPort:          peerbook.DefaultListenPort,
			MTU:                 peerbook.DefaultMTU,
			PersistentKeepalive: peerbook.DefaultKeepalive,
		},
	})
	if err != nil {
		return nil, err
	}
	err = s.Push(ctx, nb, ed.signer, false)
	if errors.Is(err, etcdbook.ErrExists) {
		return nil, fmt.Errorf("%w: --network only starts a new book (the mesh networks of a book are not a membership change)", err)
	}
	return nb, err
}

func (e *env) bookPush(c *cli.Context) error {
	a, err := args(c, "FILE", "etcd://...")
	if err != nil {
		return err
	}
	if !etcdbook.IsURL(a[1]) {
		return usagef("book push: %q is not an etcd:// address; usage: %s FILE etcd://HOST:PORT/PREFIX", a[1], c.Command.HelpName)
	}
	book, err := loadBook(a[0])
	if err != nil {
		return err
	}
	var signer ssh.Signer
	if path := c.String("sign-key"); path != "" {
		if signer, err = booksign.LoadSigner(path); err != nil {
			return err
		}
	} else if _, err := os.Stat(a[0] + ".sig"); err == nil {
		return fmt.Errorf("%s is signed (%s.sig exists): nodes with --trusted-signers would refuse it unsigned in etcd; give --sign-key SSH_PRIVATE_KEY to sign it there", a[0], a[0])
	}
	s, err := openEtcd(a[1], etcdOptions(c))
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	shown := s.Target().String()
	var old *peerbook.Book
	if c.Bool("force") {
		if snap, err := s.Load(ctx); err == nil {
			old, _, _ = snap.Book(shown, nil)
		}
	}
	err = s.Push(ctx, book, signer, c.Bool("force"))
	if errors.Is(err, etcdbook.ErrExists) {
		return fmt.Errorf("%w; not replaced: add --force to replace it (nodes follow the new book at once)", err)
	}
	if err != nil {
		return err
	}
	if old != nil && old.Serial >= book.Serial {
		fmt.Fprintf(e.stderr, "note: the replaced book had serial %d and this one has %d: nodes with --trusted-signers refuse a book whose serial went back; raise serial in %s and push again\n", old.Serial, book.Serial, a[0])
	}
	if signer != nil {
		fmt.Fprintf(e.stdout, "%s: signed serial %d with %s %s\n", shown, book.Serial, signer.PublicKey().Type(), ssh.FingerprintSHA256(signer.PublicKey()))
	}
	_, err = fmt.Fprintf(e.stdout, "%s: pushed %s: %d members, serial %d\n", shown, a[0], len(book.Peers), book.Serial)
	return err
}

func (e *env) bookPull(c *cli.Context) error {
	a, err := args(c, "etcd://...")
	if err != nil {
		return err
	}
	if !etcdbook.IsURL(a[0]) {
		return usagef("book pull: %q is not an etcd:// address", a[0])
	}
	var signers *booksign.AllowedSigners
	if path := c.String("trusted-signers"); path != "" {
		if signers, err = booksign.LoadAllowedSigners(path); err != nil {
			return fmt.Errorf("--trusted-signers: %w", err)
		}
	}
	book, signer, err := loadEtcdBook(a[0], etcdOptions(c), signers)
	if err != nil {
		return err
	}
	text := peerbook.Marshal(book)
	out := c.String("out")
	if out == "" {
		_, err = e.stdout.Write(text)
		return err
	}
	if err := fileutil.WriteFileExclusive(out, text, 0o644); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite it", out)
		}
		return err
	}
	if signer != "" {
		fmt.Fprintf(e.stdout, "%s: signed by %s\n", a[0], signer)
	}
	_, err = fmt.Fprintf(e.stdout, "%s: %d members, serial %d\n", out, len(book.Peers), book.Serial)
	return err
}

// watchEtcdBook follows the etcd:// book of `up`.
func watchEtcdBook(ctx context.Context, cfg upConfig, opts booksource.Options, reload <-chan struct{}) (booksource.Update, <-chan booksource.Update, error) {
	s, err := openEtcd(cfg.book, cfg.etcd)
	if err != nil {
		return booksource.Update{}, nil, err
	}
	return booksource.WatchEtcd(ctx, opts, booksource.EtcdOptions{Store: s, Reload: reload, CloseStore: true})
}

// endpointsEvery is how often a node publishes what it observes.
const endpointsEvery = 5 * time.Second

// etcdEndpoints is the observed-endpoint directory of an etcd book, for
// `up`: the node looks members without an endpoint in the book up there,
// and a node that has an endpoint in the book (so others reach it and it
// sees their NAT mappings) publishes what it observes of them, under a
// lease that expires when it dies. Every node also publishes its view of
// the mesh (each member's path and last handshake) for the page's mesh
// matrix, under a lease of its own.
type etcdEndpoints struct {
	store *etcdbook.Store
	dir   *etcdbook.Directory
	views *etcdbook.ViewPublisher
}

func startEtcdEndpoints(cfg upConfig) (*etcdEndpoints, error) {
	s, err := openEtcd(cfg.book, cfg.etcd)
	if err != nil {
		return nil, err
	}
	// The observer's name is this member's, known once the node runs
	// (run sets it before each Publish).
	return &etcdEndpoints{store: s, dir: etcdbook.NewDirectory(s, "", 0), views: etcdbook.NewViewPublisher(s, 0)}, nil
}

// run publishes every endpointsEvery until ctx is done.
func (x *etcdEndpoints) run(ctx context.Context, n *node.Node, log *slog.Logger) {
	t := time.NewTicker(endpointsEvery)
	defer t.Stop()
	failing, viewFailing := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := n.Status()
		if st.Name != "" {
			err := x.views.Publish(ctx, viewOf(st))
			switch {
			case err != nil && !viewFailing && ctx.Err() == nil:
				log.Warn("cannot publish this node's view to etcd; retrying", "err", err)
				viewFailing = true
			case err == nil && viewFailing:
				log.Info("publishing this node's view to etcd again")
				viewFailing = false
			}
		}
		book := n.Book()
		self, ok := book.PeerByName(st.Name)
		if !ok || self.Endpoint.IsZero() {
			continue
		}
		x.dir.SetObserver(self.Name)
		seen := map[peerbook.Key]netip.AddrPort{}
		for _, m := range n.ObservedEndpoints() {
			if p, ok := book.PeerByKey(m.PublicKey); ok && p.Endpoint.IsZero() {
				seen[m.PublicKey] = m.Endpoint
			}
		}
		err := x.dir.Publish(ctx, seen)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			log.Warn("cannot publish observed endpoints to etcd; retrying", "err", err)
			failing = true
		case err == nil && failing:
			log.Info("publishing observed endpoints to etcd again", "members", len(seen))
			failing = false
		}
	}
}

// viewOf is the view of the mesh that st shows: names, paths and
// handshake times only.
func viewOf(st node.Status) etcdbook.View {
	v := etcdbook.View{Name: st.Name, Time: time.Now().UTC().Truncate(time.Second), Peers: make([]etcdbook.PeerView, 0, len(st.Peers))}
	for _, p := range st.Peers {
		if p.NotInBook {
			continue
		}
		v.Peers = append(v.Peers, etcdbook.PeerView{Name: p.Name, Path: p.Path, LastHandshake: p.LastHandshake})
	}
	return v
}

func (x *etcdEndpoints) close() {
	x.views.Close()
	x.dir.Close()
	x.store.Close()
}
