package booksource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// maxPairAttempts bounds how often one poll fetches the book and its
// signature again when they do not match and are still changing.
const maxPairAttempts = 4

// Defaults of PollURL.
const (
	DefaultPollInterval = time.Minute
	DefaultTimeout      = 10 * time.Second
)

// HTTPOptions tune PollURL.
type HTTPOptions struct {
	// Client makes the requests. nil: a client of its own that uses no
	// proxy (the library reads no environment); pass a client to use one.
	// Its CheckRedirect is wrapped so that no redirect can leave https.
	Client *http.Client
	// AllowHTTP permits a plain http:// URL. The book is public, but over
	// plain HTTP anyone on the path can replace it: use it only with
	// TrustedSigners or on a trusted network.
	AllowHTTP bool
	// Timeout bounds each request, body included. 0: DefaultTimeout.
	Timeout time.Duration
	// MaxSize bounds the book's size in bytes. 0: peerbook.MaxSize.
	MaxSize int64
	// Reload, if not nil, forces a poll for each value received (SIGHUP,
	// typically).
	Reload <-chan struct{}
}

// PollURL fetches the book at rawURL (and rawURL's path + ".sig" when
// opts.TrustedSigners is set), then polls it every interval (<= 0:
// DefaultPollInterval) with conditional requests (If-None-Match,
// If-Modified-Since); an unchanged book costs a 304 and emits nothing.
//
// Only https:// is accepted, and no redirect may lead from https to
// anything else; http:// needs hopts.AllowHTTP (the --allow-http flag).
// A server error, a timeout or an oversized body is sent on updates as an
// Update with Err; the running book stays.
//
// With opts.StateDir set, every accepted book (and its signature) is
// cached there. If the server cannot be used at start (down, failing, or
// serving a refused book), first is the cached book, with FromCache set and
// a warning logged; with no usable cache either, PollURL fails.
//
// updates is closed when ctx is done; the caller must keep receiving until
// then.
func PollURL(ctx context.Context, rawURL string, every time.Duration, opts Options, hopts HTTPOptions) (first Update, updates <-chan Update, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not the URL itself: it may hold credentials.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return Update{}, nil, fmt.Errorf("book URL: %w", err)
	}
	shown := displayURL(u)
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && hopts.AllowHTTP:
	case u.Scheme == "http":
		return Update{}, nil, fmt.Errorf("refusing plain http book URL %s: anyone on the path could change the book; use https:// or pass --allow-http", shown)
	default:
		return Update{}, nil, fmt.Errorf("book URL %s: scheme must be https", shown)
	}
	if u.Host == "" {
		return Update{}, nil, fmt.Errorf("book URL %s: no host", shown)
	}
	if every <= 0 {
		every = DefaultPollInterval
	}
	sigU := *u
	sigU.Path += SigSuffix
	if sigU.RawPath != "" {
		sigU.RawPath += SigSuffix
	}

	g, err := newGate(shown, displayURL(&sigU), opts, true)
	if err != nil {
		return Update{}, nil, err
	}
	p := &poller{
		gate:    g,
		log:     g.log,
		client:  safeClient(hopts.Client, hopts.AllowHTTP),
		timeout: hopts.Timeout,
		book:    resource{url: u.String(), shown: shown, max: hopts.MaxSize},
		sig:     resource{url: sigU.String(), shown: displayURL(&sigU), max: booksign.MaxSigSize},
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.book.max <= 0 {
		p.book.max = peerbook.MaxSize
	}

	first, err = p.start(ctx)
	if err != nil {
		if hopts.Client == nil {
			p.client.CloseIdleConnections()
		}
		return Update{}, nil, err
	}
	ch := make(chan Update)
	go p.run(ctx, every, hopts.Reload, hopts.Client == nil, ch)
	return first, ch, nil
}

// displayURL is the URL for messages: credentials and query values may be
// secrets, so they are left out.
func displayURL(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	s := v.String()
	if u.RawQuery != "" {
		s += "?…"
	}
	return s
}

// safeClient returns a copy of c whose redirects cannot downgrade from
// https.
func safeClient(c *http.Client, allowHTTP bool) *http.Client {
	var cc http.Client
	if c != nil {
		cc = *c
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		cc.Transport = t
	}
	next := cc.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		to := displayURL(req.URL)
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("refusing redirect from https to %s", to)
		}
		if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && allowHTTP) {
			return fmt.Errorf("refusing redirect to %s: not https (see --allow-http)", to)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

type poller struct {
	gate    *gate
	log     *slog.Logger
	client  *http.Client
	timeout time.Duration
	book    resource
	sig     resource
}

// resource is one fetched URL with what conditional requests need.
type resource struct {
	url, shown   string
	max          int64
	body         []byte // last 200 body; nil when none or missing
	missing      bool   // last answer was 404
	etag         string
	lastModified string
}

// poll fetches the book (and signature). Unchanged resources cost a 304;
// the gate then finds the version identical to the last one seen.
func (p *poller) poll(ctx context.Context) version {
	var prev version
	for attempt := 1; ; attempt++ {
		if err := p.fetch(ctx, &p.book); err != nil {
			return version{err: err}
		}
		if p.book.missing {
			return version{err: fmt.Errorf("fetching %s: server answered 404 Not Found", p.book.shown)}
		}
		v := version{book: p.book.body}
		if !p.gate.signed() {
			return v
		}
		if err := p.fetch(ctx, &p.sig); err != nil {
			return version{err: err}
		}
		if !p.sig.missing {
			v.sig = p.sig.body
		}
		// A server publishes the book and its signature one after the
		// other, so a poll in between sees a pair that does not match.
		// While the pair keeps changing, look again before calling it
		// tampered.
		if attempt == maxPairAttempts || (attempt > 1 && v.fingerprint() == prev.fingerprint()) {
			return v
		}
		if _, err := p.gate.opts.TrustedSigners.Verify(v.book, v.sig); !errors.Is(err, booksign.ErrBadSignature) {
			return v
		}
		p.log.Debug("book and signature do not match; fetching both again", "url", p.book.shown)
		prev = v
	}
}

// fetch GETs r, conditionally when a body is held; after a 304 r keeps
// its body.
func (p *poller) fetch(ctx context.Context, r *resource) error {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, r.url, nil)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", r.shown, err)
	}
	req.Header.Set("User-Agent", "wgmesh-booksource")
	if r.body != nil {
		if r.etag != "" {
			req.Header.Set("If-None-Match", r.etag)
		}
		if r.lastModified != "" {
			req.Header.Set("If-Modified-Since", r.lastModified)
		}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return p.fetchError(ctx, rctx, r, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusNotModified && r.body != nil:
		return nil
	case resp.StatusCode == http.StatusNotFound:
		r.body, r.missing, r.etag, r.lastModified = nil, true, "", ""
		return nil
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("fetching %s: server answered %s", r.shown, resp.Status)
	}
	if resp.ContentLength > r.max {
		return fmt.Errorf("fetching %s: %d bytes, over the limit of %d", r.shown, resp.ContentLength, r.max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.max+1))
	if err != nil {
		return p.fetchError(ctx, rctx, r, err)
	}
	if rctx.Err() != nil {
		// Cancellation can race with a response the server sent when it
		// saw the connection go (an empty 200, say): not to be trusted.
		return p.fetchError(ctx, rctx, r, rctx.Err())
	}
	if int64(len(body)) > r.max {
		return fmt.Errorf("fetching %s: body over the limit of %d bytes", r.shown, r.max)
	}
	r.body, r.missing = body, false
	r.etag, r.lastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return nil
}

func (p *poller) fetchError(ctx, rctx context.Context, r *resource, err error) error {
	if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("fetching %s: no complete answer within %v", r.shown, p.timeout)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // its message repeats the full URL, query included
	}
	return fmt.Errorf("fetching %s: %w", r.shown, err)
}

func (p *poller) start(ctx context.Context) (Update, error) {
	u, _ := p.gate.consider(p.poll(ctx))
	if u.Err == nil {
		p.saveCache(u)
		return u, nil
	}
	reason := u.Err
	if ctx.Err() != nil {
		return Update{}, ctx.Err()
	}
	dir := p.gate.opts.StateDir
	if dir == "" {
		return Update{}, fmt.Errorf("%w (no state dir, so no cached book to start from)", reason)
	}
	cached, err := p.readCache()
	if errors.Is(err, os.ErrNotExist) {
		return Update{}, fmt.Errorf("%w (and no cached book in %s to start from)", reason, dir)
	}
	if err != nil {
		return Update{}, fmt.Errorf("%w (and the cached book is unusable: %v)", reason, err)
	}
	// The cache is checked like any other version: it was signed when it
	// was stored, and the serial rule still applies.
	cu, _ := p.gate.consider(cached)
	if cu.Err != nil {
		return Update{}, fmt.Errorf("%w (and the cached book is refused: %v)", reason, cu.Err)
	}
	cu.FromCache = true
	p.log.Warn("book server unusable; starting from the cached book", "url", p.book.shown, "serial", cu.Book.Serial, "err", reason)
	return cu, nil
}

// run polls until ctx is done. closeIdle: the client is ours, so its
// connections go with it.
func (p *poller) run(ctx context.Context, every time.Duration, reload <-chan struct{}, closeIdle bool, ch chan<- Update) {
	defer close(ch)
	if closeIdle {
		defer p.client.CloseIdleConnections()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case _, ok := <-reload:
			if !ok {
				reload = nil
				continue
			}
		}
		v := p.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		var u Update
		if v.err != nil {
			// Fetch failures bypass the gate and are reported every time:
			// they say the node is not following its book right now.
			u = Update{Err: v.err}
		} else {
			var news bool
			if u, news = p.gate.consider(v); !news {
				p.log.Debug("book unchanged", "url", p.book.shown)
				continue
			}
			if u.Err == nil {
				p.saveCache(u)
			}
		}
		select {
		case ch <- u:
		case <-ctx.Done():
			return
		}
	}
}

func (p *poller) readCache() (version, error) {
	dir := p.gate.opts.StateDir
	book, err := fileutil.ReadFileLimitNoFollow(filepath.Join(dir, CachedBook), peerbook.MaxSize)
	if err != nil {
		return version{}, err
	}
	v := version{book: book}
	if p.gate.signed() {
		sig, err := fileutil.ReadFileLimitNoFollow(filepath.Join(dir, CachedBookSig), booksign.MaxSigSize)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return version{}, err
		}
		v.sig = sig
	}
	return v, nil
}

func (p *poller) saveCache(u Update) {
	dir := p.gate.opts.StateDir
	if dir == "" {
		return
	}
	// A crash between the two writes leaves a pair that fails
	// verification: refused at restart, never wrongly accepted. The next
	// accepted book rewrites both.
	var err error
	if u.Sig != nil {
		err = writeFileAtomic(dir, CachedBookSig, u.Sig)
	} else if rerr := os.Remove(filepath.Join(dir, CachedBookSig)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	if err == nil {
		err = writeFileAtomic(dir, CachedBook, u.Raw)
	}
	if err != nil {
		p.log.Warn("cannot cache the book; a restart while the server is down will fail", "serial", u.Book.Serial, "err", err)
	} else {
		p.log.Debug("cached the book", "dir", dir, "serial", strconv.FormatUint(u.Book.Serial, 10))
	}
}
