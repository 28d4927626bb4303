package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/metrics"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// defaultStateDir is where `up` keeps the highest accepted serial and the
// last good remote book: the system state directory for root, else the
// user's (XDG_STATE_HOME).
func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/wgmesh"
	}
	if dir := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "wgmesh")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "wgmesh")
	}
	return ""
}

// bookFlags checks the options about where the book comes from.
func bookFlags(c *cli.Context, cfg *upConfig) error {
	cfg.trustedSigners = c.String("trusted-signers")
	cfg.stateDir = c.String("state-dir")
	cfg.bookPoll = c.Duration("book-poll")
	cfg.allowHTTP = c.Bool("allow-http")
	cfg.bookCA = c.String("book-ca")
	cfg.resolveInterval = c.Duration("resolve-interval")

	lower := strings.ToLower(cfg.book)
	switch {
	case etcdbook.IsURL(cfg.book):
		cfg.bookEtcd, cfg.etcd = true, etcdOptions(c)
		for _, f := range []string{"book-poll", "book-ca"} {
			if c.IsSet(f) {
				return usagef("--%s applies to a --book https:// URL; an etcd:// book is watched, with --etcd-ca for its TLS", f)
			}
		}
	case strings.HasPrefix(lower, "https://"):
		cfg.bookURL = true
	case strings.HasPrefix(lower, "http://"):
		if !cfg.allowHTTP {
			return usagef("--book %s: plain http lets anyone on the path replace the book; use https, or add --allow-http (with --trusted-signers, or on a trusted network)", redactURL(cfg.book))
		}
		cfg.bookURL = true
	default:
		if strings.Contains(cfg.book, "://") {
			return usagef("--book %s: want a file, an https:// URL, an http:// URL with --allow-http or an etcd:// book", redactURL(cfg.book))
		}
		if err := checkEtcdFlags(c, cfg.book); err != nil {
			return err
		}
		for _, f := range []string{"book-poll", "allow-http", "book-ca"} {
			if c.IsSet(f) {
				return usagef("--%s applies to a --book URL, not to a file", f)
			}
		}
	}
	if cfg.bookPoll <= 0 {
		return usagef("--book-poll %s: want a positive duration, e.g. 1m", cfg.bookPoll)
	}
	if cfg.resolveInterval <= 0 {
		return usagef("--resolve-interval %s: want a positive duration, e.g. 60s", cfg.resolveInterval)
	}
	if c.IsSet("state-dir") && cfg.stateDir == "" {
		return usagef("--state-dir needs a directory")
	}
	return nil
}

// redactURL leaves credentials and query values out of messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if u.RawQuery != "" {
		return v.String() + "?…"
	}
	return v.String()
}

// bookSource is the running source of the book: its first version and
// the later ones.
type bookSource struct {
	shown   string // the file or the URL without secrets, for logs
	first   booksource.Update
	updates <-chan booksource.Update
}

// drain receives until the source has stopped (its context is done), as
// booksource requires.
func (s *bookSource) drain() {
	for range s.updates {
	}
}

// startBookSource reads the first book from the file or URL and follows
// it. Each value on hup (SIGHUP) makes it read the book again.
func (e *env) startBookSource(ctx context.Context, cfg upConfig, hup <-chan os.Signal) (*bookSource, error) {
	opts := booksource.Options{StateDir: cfg.stateDir, Logger: e.log}
	// Checked here too, to name the flag: whoever can write the state dir
	// can reset the rollback protection or plant a cached book.
	if cfg.stateDir != "" && (cfg.trustedSigners != "" || cfg.bookURL || cfg.bookEtcd) {
		if err := fileutil.PrivateDir(cfg.stateDir, "state directory"); err != nil {
			return nil, fmt.Errorf("--state-dir: %w", err)
		}
	}
	if cfg.trustedSigners != "" {
		signers, err := booksign.LoadAllowedSigners(cfg.trustedSigners)
		if err != nil {
			return nil, fmt.Errorf("--trusted-signers: %w", err)
		}
		if signers.Len() == 0 {
			return nil, fmt.Errorf("--trusted-signers %s lists no key for %s: no book could ever be accepted", cfg.trustedSigners, booksign.Namespace)
		}
		opts.TrustedSigners = signers
	}
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // a re-read is already pending
				}
			}
		}
	}()

	src := &bookSource{shown: cfg.book}
	var err error
	if cfg.bookURL {
		src.shown = redactURL(cfg.book)
		hopts := booksource.HTTPOptions{AllowHTTP: cfg.allowHTTP, Reload: reload}
		if cfg.bookCA != "" {
			if hopts.Client, err = clientWithCA(cfg.bookCA); err != nil {
				return nil, err
			}
		}
		src.first, src.updates, err = booksource.PollURL(ctx, cfg.book, cfg.bookPoll, opts, hopts)
	} else if cfg.bookEtcd {
		src.first, src.updates, err = watchEtcdBook(ctx, cfg, opts, reload)
	} else {
		src.first, src.updates, err = booksource.WatchFile(ctx, cfg.book, reload, opts)
	}
	var serr *booksource.StateError
	if errors.As(err, &serr) {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	if err != nil {
		return nil, bookRefused(src.shown, err)
	}
	if src.first.FromCache {
		e.log.Warn("the book server cannot be used; starting from the cached book", "book", src.shown, "state_dir", cfg.stateDir, "serial", src.first.Book.Serial)
	}
	return src, nil
}

// bookRefused says why no book could be used, every problem of an invalid
// book on its own line.
func bookRefused(shown string, err error) error {
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return fmt.Errorf("peer book %s refused, %s:\n%w", shown, plural(len(perr.Problems), "problem"), err)
	}
	return fmt.Errorf("peer book %s refused: %w", shown, err)
}

// maxCAFile bounds --book-ca: a bundle of every public CA is under 1 MiB.
const maxCAFile = 4 << 20

// clientWithCA returns an HTTP client for --book that trusts the system's
// CAs and those in the PEM file at path. Like booksource's own client it
// uses no proxy from the environment.
func clientWithCA(path string) (*http.Client, error) {
	pem, err := fileutil.ReadFileLimit(path, maxCAFile)
	if err != nil {
		return nil, fmt.Errorf("--book-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--book-ca %s: no PEM certificate in the file", path)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.TLSClientConfig.RootCAs = pool
	return &http.Client{Transport: t}, nil
}

// apply handles one new version of the book: a refused one is logged
// problem by problem and shown by status; a good one is applied as a
// difference.
func (e *env) apply(ctx context.Context, n *node.Node, u booksource.Update, cfg upConfig, shown string, rep *reporter, m *metrics.Metrics) {
	if u.Err == nil {
		if err := n.Reload(ctx, u.Book); err != nil {
			u.Err = err
		}
	}
	if u.Err != nil {
		var perr *peerbook.Error
		if errors.As(u.Err, &perr) {
			for _, p := range perr.Problems {
				e.log.Error("book refused: "+p.String(), "book", shown)
			}
		} else {
			e.log.Error("book refused: "+u.Err.Error(), "book", shown)
		}
		e.log.Warn("the running peer book stays in force", "serial", n.Book().Serial)
		rep.reject(u.Err)
		if m != nil {
			m.Reloaded(false)
		}
		return
	}
	rep.accept()
	if m != nil {
		m.Reloaded(true)
	}
	attrs := []any{"book", shown, "serial", u.Book.Serial, "members", len(u.Book.Peers)}
	if u.Signer != "" {
		attrs = append(attrs, "signer", u.Signer)
	}
	e.log.Info("book reloaded", attrs...)
	e.warnRulesNotEnforced(u.Book)
	for _, s := range cfg.forwards {
		if err := checkTarget(u.Book, s); err != nil {
			e.log.Warn(err.Error())
		}
	}
}

// reporter is what the control socket serves: the node's status and the
// last refused book.
type reporter struct {
	n *node.Node

	mu  sync.Mutex
	rej *control.Rejection
}

func (r *reporter) Report() control.Report {
	rep := control.Report{Status: r.n.Status()}
	r.mu.Lock()
	if r.rej != nil {
		rej := *r.rej
		rep.LastRejection = &rej
	}
	r.mu.Unlock()
	return rep
}

func (r *reporter) reject(err error) {
	r.mu.Lock()
	r.rej = &control.Rejection{Time: time.Now().UTC(), Error: err.Error()}
	r.mu.Unlock()
}

func (r *reporter) accept() {
	r.mu.Lock()
	r.rej = nil
	r.mu.Unlock()
}

// warnRulesNotEnforced says, for a book with access rules, that this
// version checks them but does not enforce them yet: a user who writes a
// rule must not believe a member is closed that is not.
func (e *env) warnRulesNotEnforced(book *peerbook.Book) {
	if len(book.Rules) > 0 {
		e.log.Warn("the peer book has access rules, which this version checks but does not enforce yet: every member still accepts every flow", "rules", len(book.Rules))
	}
}
