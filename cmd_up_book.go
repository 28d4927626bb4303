package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/daemon"
	"github.com/wgmesh/wgmesh/etcdbook"

	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/internal/netutil"
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
			return usagef("--book %s: plain http lets anyone on the path replace the book; use https, or add --allow-http (with --trusted-signers, or on a trusted network)", netutil.RedactURL(cfg.book))
		}
		cfg.bookURL = true
	default:
		if strings.Contains(cfg.book, "://") {
			return usagef("--book %s: want a file, an https:// URL, an http:// URL with --allow-http or an etcd:// book", netutil.RedactURL(cfg.book))
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

// bookSettings sets where the daemon's book comes from and how it is
// checked: the signers of --trusted-signers, and for a URL its poll
// interval, --allow-http and the client trusting --book-ca.
func bookSettings(cfg upConfig, dcfg *daemon.Config) error {
	if cfg.trustedSigners != "" {
		signers, err := booksign.LoadAllowedSigners(cfg.trustedSigners)
		if err != nil {
			return fmt.Errorf("--trusted-signers: %w", err)
		}
		if signers.Len() == 0 {
			return fmt.Errorf("--trusted-signers %s lists no key for %s: no book could ever be accepted", cfg.trustedSigners, booksign.Namespace)
		}
		dcfg.TrustedSigners = signers
	}
	if cfg.bookEtcd {
		// The etcd:// book: watched, cached in the state directory.
		dcfg.Sources = map[string]daemon.OpenSource{"etcd": func(book string) (daemon.BookSource, error) {
			return daemon.FollowFunc(netutil.RedactURL(book), func(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
				return watchEtcdBook(ctx, cfg, opts, reload)
			}), nil
		}}
		return nil
	}
	if !cfg.bookURL {
		return nil
	}
	dcfg.Poll, dcfg.AllowHTTP = cfg.bookPoll, cfg.allowHTTP
	if cfg.bookCA != "" {
		client, err := clientWithCA(cfg.bookCA)
		if err != nil {
			return err
		}
		dcfg.HTTPClient = client
	}
	return nil
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
