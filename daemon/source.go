package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// BookSource is where the daemon's peer book comes from. The file and URL
// sources of package booksource are BookSources (FileSource, URLSource);
// another one (a store with a watch API, say) plugs in through
// Config.Source or, by URL scheme, Config.Sources.
type BookSource interface {
	// Follow reads the first version of the book, which must be usable
	// (else the error says why), and then delivers every new version on
	// updates: accepted ones with Book set, refused ones with Err set, all
	// checked with opts (signatures, serials, state directory) as
	// booksource's sources do. Each value received from reload asks for a
	// re-read now. The source stops, and closes updates, when ctx is done;
	// the daemon keeps receiving until then.
	Follow(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (first booksource.Update, updates <-chan booksource.Update, err error)

	// String names the book in logs and messages, without secrets.
	String() string
}

// OpenSource makes the BookSource of a Config.Book given as a URL of its
// scheme.
type OpenSource func(book string) (BookSource, error)

// FollowFunc adapts a function of the shape of booksource.WatchFile to a
// BookSource named name.
func FollowFunc(name string, follow func(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (booksource.Update, <-chan booksource.Update, error)) BookSource {
	return funcSource{name, follow}
}

type funcSource struct {
	name   string
	follow func(context.Context, <-chan struct{}, booksource.Options) (booksource.Update, <-chan booksource.Update, error)
}

func (s funcSource) Follow(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
	return s.follow(ctx, reload, opts)
}

func (s funcSource) String() string { return s.name }

// FileSource is a book file, watched for changes (booksource.WatchFile).
type FileSource struct{ Path string }

func (s FileSource) Follow(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
	return booksource.WatchFile(ctx, s.Path, reload, opts)
}

func (s FileSource) String() string { return s.Path }

// URLSource is a book URL, polled (booksource.PollURL).
type URLSource struct {
	URL       string
	Poll      time.Duration // 0: booksource.DefaultPollInterval
	AllowHTTP bool          // permit plain http://
	Client    *http.Client  // nil: booksource's own, using no proxy
}

func (s URLSource) Follow(ctx context.Context, reload <-chan struct{}, opts booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
	return booksource.PollURL(ctx, s.URL, s.Poll, opts, booksource.HTTPOptions{Client: s.Client, AllowHTTP: s.AllowHTTP, Reload: reload})
}

func (s URLSource) String() string { return netutil.RedactURL(s.URL) }

// openSource picks the book source: Config.Source, else by Config.Book's
// scheme: Config.Sources first, then http(s); no scheme is a file.
func (d *Daemon) openSource() (BookSource, error) {
	c := &d.cfg
	if c.Source != nil {
		return c.Source, nil
	}
	scheme, _, ok := strings.Cut(c.Book, "://")
	if !ok {
		return FileSource{Path: c.Book}, nil
	}
	scheme = strings.ToLower(scheme)
	if open := c.Sources[scheme]; open != nil {
		return open(c.Book)
	}
	switch scheme {
	case "https", "http":
		return URLSource{URL: c.Book, Poll: c.Poll, AllowHTTP: c.AllowHTTP, Client: c.HTTPClient}, nil
	}
	return nil, &ConfigError{Field: "Book", Err: fmt.Errorf("%s: no book source for the scheme %q: want a file, an https:// URL, or a scheme in Sources", netutil.RedactURL(c.Book), scheme)}
}

// startSource reads the first book and follows it until Close.
func (d *Daemon) startSource(ctx context.Context) error {
	src, err := d.openSource()
	if err != nil {
		return err
	}
	d.src = src
	opts := booksource.Options{TrustedSigners: d.cfg.TrustedSigners, StateDir: d.cfg.StateDir, Logger: d.log}
	// The source lives until Close; ctx can still abort the first read.
	fctx, stop := context.WithCancel(d.run)
	abort := context.AfterFunc(ctx, stop)
	first, updates, err := src.Follow(fctx, d.reload, opts)
	abort()
	if err != nil {
		stop()
		var serr *booksource.StateError
		if errors.As(err, &serr) {
			return &ConfigError{Field: "StateDir", Err: err}
		}
		return BookRefused(src.String(), err)
	}
	d.push("source", func() {
		stop()
		for range updates { // booksource's contract: receive until closed
		}
	})
	d.first, d.updates = first, updates
	if first.FromCache {
		d.log.Warn("the book server cannot be used; starting from the cached book", "book", src.String(), "state_dir", d.cfg.StateDir, "serial", first.Book.Serial)
	}
	return nil
}

// BookRefused says why no book could be used, every problem of an invalid
// book on its own line.
func BookRefused(shown string, err error) error {
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		n := len(perr.Problems)
		word := "problems"
		if n == 1 {
			word = "problem"
		}
		return fmt.Errorf("peer book %s refused, %d %s:\n%w", shown, n, word, err)
	}
	return fmt.Errorf("peer book %s refused: %w", shown, err)
}
