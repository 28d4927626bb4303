// Package daemon runs what `wgmesh up` runs around a node: it follows the
// peer book (a watched file, a polled URL, or any source plugged in by
// scheme), applies every new version to the node as a difference, and
// serves forwards, exposes, the SOCKS5 and HTTP proxies, mesh DNS, the
// metrics endpoint and the control socket. A Go program gets the same live
// mesh as the command with a few lines.
//
// # Usage
//
//	d, err := daemon.New(daemon.Config{
//		Book:    "/etc/wgmesh/book.toml", // or https://..., or a scheme in Sources
//		KeyFile: "/etc/wgmesh/private.key",
//		Logger:  logger,
//	})
//	if err != nil { ... }
//	if err := d.Start(ctx); err != nil { ... } // nothing is left running
//	defer d.Close()
//	conn, err := d.Node().Dial(ctx, "tcp", "beta:80")
//
// # Lifecycle
//
// Start runs once; later calls return the first call's error. Start runs
// the steps listed in (*Daemon).steps, in order; whatever a step sets up
// it registers in one list at once, and a failing step (or Close) undoes
// that list in reverse order. So shutdown is the start-up backwards:
// readiness goes to 503 and the control socket closes first, then the book
// stops being followed, the relays, services and metrics server stop, the
// node closes, and last the host listeners and the book source. Close is
// idempotent, and fine before or during Start.
//
// # Where things go
//
//   - A new book source: a BookSource and, for a new scheme, an entry in
//     Config.Sources set by the program (source.go has the file and URL
//     ones); the daemon itself does not change.
//   - A new node setting (a flag of `up` that the node handles): a field
//     of node.Config, set through Config.Node; the daemon passes it on.
//   - A new service: a field in Config, its listener in bindHost and its
//     start in startServices (services.go), each registering its undo.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/forward"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

// Config describes a daemon. The zero value of every optional field is a
// working default, stated beside it.
type Config struct {
	// Book says where the peer book comes from: a file (watched for
	// changes), an https:// URL (polled), an http:// URL (with AllowHTTP),
	// or SCHEME://... for a scheme in Sources. Required unless Source is
	// set.
	Book string

	// Source, if set, delivers the book instead of Book.
	Source BookSource

	// Sources adds book sources by URL scheme (lower case, without "://"),
	// e.g. "etcd". They are consulted before the built-in file and
	// http(s) sources. Default: none.
	Sources map[string]OpenSource

	// TrustedSigners, if not nil, makes book signatures mandatory and
	// refuses serials that go back (see package booksource). Default:
	// signatures are not read.
	TrustedSigners *booksign.AllowedSigners

	// StateDir keeps the highest accepted serial, the last good remote
	// book and, in TUN mode, the sysctl values to restore. It must be
	// private to this user. Default: nothing is kept.
	StateDir string

	// Poll is how often a URL book is fetched. Default:
	// booksource.DefaultPollInterval.
	Poll time.Duration

	// AllowHTTP permits a plain http:// Book. Default: only https.
	AllowHTTP bool

	// HTTPClient fetches a URL book. Default: booksource's own client,
	// which uses no proxy.
	HTTPClient *http.Client

	// KeyFile is read (it must be mode 0600) for this member's private key
	// when Node.PrivateKey is zero.
	KeyFile string

	// Node configures the node. Its Book is set by the daemon from the
	// book source, and its MeshDNS when DNS is set; its Logger defaults to
	// Logger. Every other field is passed on as it is.
	Node node.Config

	// Forwards relay host listeners to mesh targets; Exposes relay mesh
	// ports to host targets (forward.ParseForward, forward.ParseExpose).
	// Default: none.
	Forwards, Exposes []forward.Spec

	// ControlPath is the control socket `wgmesh status` asks. Default: "",
	// no control socket.
	ControlPath string

	// Metrics, SOCKS, HTTPProxy and DNS are host listen addresses
	// (HOST:PORT) of the Prometheus endpoint (/metrics, /healthz, /readyz),
	// the SOCKS5 proxy, the HTTP proxy and the mesh name server (UDP and
	// TCP; in netstack mode it also answers on port 53 of this member's
	// mesh addresses). Port 0 lets the system choose (see Addrs). Default:
	// "", off.
	Metrics, SOCKS, HTTPProxy, DNS string

	// ProxyAuth, if set, is required from clients of the proxies. Without
	// it the proxies may listen on loopback addresses only.
	ProxyAuth *proxy.Credentials

	// ProxyAllow lets the proxies reach these prefixes besides members and
	// their subnets. Default: none.
	ProxyAllow []netip.Prefix

	// OnReload, if set, is called after each new version of the book was
	// applied (err nil) or refused (err says why; the running book stays),
	// from the goroutine that follows the book: it must not block for long.
	OnReload func(book *peerbook.Book, err error)

	// Instance names this daemon on the host in the ready log line.
	// Default: not shown.
	Instance string

	// Logger receives the daemon's and the node's logs. Default: discard.
	Logger *slog.Logger

	// test hooks, nil outside tests: before runs before each start step
	// and may fail it; pushed and undone see the undo list change.
	hooks *hooks
}

type hooks struct {
	before func(step string) error
	pushed func(name string)
	undone func(name string)
	// services may change the limits of the services before they bind.
	services func(*services)
}

// ErrClosed is wrapped by Start's error after Close.
var ErrClosed = net.ErrClosed

// Daemon is a running `wgmesh up`: the node and what is served around it.
type Daemon struct {
	cfg Config
	log *slog.Logger

	startOnce sync.Once
	startErr  error

	// mu guards the undo list.
	mu   sync.Mutex
	undo []undoStep

	closeOnce sync.Once
	closeErr  error

	// done is closed when the daemon stops: a service failed (failErr
	// says which) or Close ran.
	done     chan struct{}
	doneOnce sync.Once
	failErr  error

	// run bounds everything the daemon keeps running; cancelled once the
	// undo list is empty, as each part is stopped in order by its undo.
	run       context.Context
	cancelRun context.CancelFunc
	// abort is cancelled by Close, to end a start-up in progress.
	abort       context.Context
	cancelAbort context.CancelFunc

	reload chan struct{}

	// Set by the start steps, in this order; read-only afterwards.
	src     BookSource
	first   booksource.Update
	updates <-chan booksource.Update
	key     peerbook.PrivateKey
	relays  []*relay
	svc     *services
	n       *node.Node
	rep     *reporter
	ctl     *control.Server
	bound   []any // ready-line attributes: service name, bound address
	meshDNS []string
	relayWG sync.WaitGroup
}

type undoStep struct {
	name string
	f    func()
}

// New checks cfg and returns a daemon that Start starts. It starts
// nothing and touches no file.
func New(cfg Config) (*Daemon, error) {
	if cfg.Source == nil && cfg.Book == "" {
		return nil, &ConfigError{Field: "Book", Err: errors.New("no peer book: set Book or Source")}
	}
	if cfg.Node.PrivateKey.IsZero() && cfg.KeyFile == "" {
		return nil, &ConfigError{Field: "KeyFile", Err: errors.New("no private key: set KeyFile or Node.PrivateKey")}
	}
	if cfg.Poll < 0 {
		return nil, &ConfigError{Field: "Poll", Err: fmt.Errorf("%s: want a positive duration", cfg.Poll)}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	run, cancel := context.WithCancel(context.Background())
	abort, cancelAbort := context.WithCancel(context.Background())
	return &Daemon{
		cfg:         cfg,
		log:         log,
		done:        make(chan struct{}),
		run:         run,
		cancelRun:   cancel,
		abort:       abort,
		cancelAbort: cancelAbort,
		reload:      make(chan struct{}, 1),
	}, nil
}

// Start starts the daemon: it reads the first book, binds every host
// listener, starts the node, serves, and follows the book until Close. ctx
// bounds the start-up only. Start runs once; later calls return the first
// call's result. If it fails, everything it set up is undone.
func (d *Daemon) Start(ctx context.Context) error {
	d.startOnce.Do(func() { d.startErr = d.start(ctx) })
	return d.startErr
}

// step is one part of the start-up.
type step struct {
	name  string
	start func(ctx context.Context) error
}

// steps is the start-up, in order. Each step registers what must be undone
// with d.push as soon as it has set it up.
func (d *Daemon) steps() []step {
	return []step{
		{"key", d.readKey},            // warnings about the config, the private key
		{"source", d.startSource},     // the first book, then follow it
		{"checks", d.check},           // forward targets, control socket free
		{"listeners", d.bindHost},     // forwards, metrics, proxies, DNS: a port in use fails here
		{"node", d.startNode},         // the device and the book applied
		{"metrics", d.serveMetrics},   // /readyz answers 503 until "ready"
		{"exposes", d.listenMesh},     // mesh listeners of --expose
		{"services", d.startServices}, // proxies and DNS
		{"relays", d.serveRelays},     // forwards and exposes serving
		{"follow", d.follow},          // new book versions applied
		{"control", d.serveControl},   // `wgmesh status`
		{"ready", d.setReady},         // /readyz 200, the ready line
	}
}

func (d *Daemon) start(ctx context.Context) error {
	if d.abort.Err() != nil {
		return fmt.Errorf("daemon: start: %w", ErrClosed)
	}
	// The steps see ctx, also cancelled by a Close during the start-up.
	// What keeps running afterwards lives on d.run instead.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.abort, cancel)()
	for _, s := range d.steps() {
		err := sctx.Err()
		if err == nil && d.cfg.hooks != nil && d.cfg.hooks.before != nil {
			err = d.cfg.hooks.before(s.name)
		}
		if err == nil {
			err = s.start(sctx)
		}
		if err == nil {
			continue
		}
		closing := d.abort.Err() != nil && ctx.Err() == nil
		d.unwind()
		switch {
		case closing:
			return fmt.Errorf("daemon: start: %w", ErrClosed)
		case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
			return fmt.Errorf("daemon: start: %w", ctx.Err())
		}
		return err
	}
	return nil
}

// push registers f to undo what was just set up.
func (d *Daemon) push(name string, f func()) {
	d.mu.Lock()
	d.undo = append(d.undo, undoStep{name, f})
	d.mu.Unlock()
	if d.cfg.hooks != nil && d.cfg.hooks.pushed != nil {
		d.cfg.hooks.pushed(name)
	}
}

// unwind undoes the list in reverse order, each entry once.
func (d *Daemon) unwind() {
	for {
		d.mu.Lock()
		if len(d.undo) == 0 {
			d.mu.Unlock()
			break
		}
		u := d.undo[len(d.undo)-1]
		d.undo = d.undo[:len(d.undo)-1]
		d.mu.Unlock()
		if d.cfg.hooks != nil && d.cfg.hooks.undone != nil {
			d.cfg.hooks.undone(u.name)
		}
		u.f()
	}
	d.cancelRun()
	d.stopped(nil)
}

// stopped closes Done, recording err (the first one) as the reason.
func (d *Daemon) stopped(err error) {
	d.doneOnce.Do(func() {
		d.failErr = err
		close(d.done)
	})
}

// Close stops the daemon, undoing the start-up in reverse order, and
// returns the error that stopped it on its own, if any (see Done). It is
// idempotent: every call returns the same result, and a Close before Start
// makes Start fail with ErrClosed.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		// A Start in progress is aborted and unwinds by itself; wait for
		// it, then undo what a finished start set up, in order: the run
		// context is cancelled only at the end.
		d.cancelAbort()
		d.startOnce.Do(func() { d.startErr = fmt.Errorf("daemon: start: %w", ErrClosed) })
		d.unwind()
		d.closeErr = d.failErr
	})
	return d.closeErr
}

// Done is closed when the daemon has stopped: after Close, after a failed
// Start, or when a service failed while running (Err says which); the
// owner then calls Close.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err returns the failure that stopped the daemon on its own, once Done is
// closed; nil when it was closed or never started.
func (d *Daemon) Err() error {
	select {
	case <-d.done:
		return d.failErr
	default:
		return nil
	}
}

// fail stops the daemon's work on a service failure: Done closes with err.
// The owner's Close undoes the rest.
func (d *Daemon) fail(err error) {
	d.stopped(err)
}

// Reload makes the book source read the book again now (SIGHUP, for the
// command). It never blocks: a re-read already pending absorbs it.
func (d *Daemon) Reload() {
	select {
	case d.reload <- struct{}{}:
	default:
	}
}

// Node returns the running node; nil before Start succeeded.
func (d *Daemon) Node() *node.Node { return d.n }

// Addrs returns the host addresses the services bound, by service:
// "metrics", "socks", "http_proxy" and "dns" (forwards are in the ready
// log line). With port 0 the system chose them. Empty before Start.
func (d *Daemon) Addrs() map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(d.bound); i += 2 {
		m[d.bound[i].(string)] = d.bound[i+1].(string)
	}
	return m
}

// Report is what the control socket serves: the node's status and the last
// refused book version.
func (d *Daemon) Report() control.Report {
	if d.rep == nil {
		return control.Report{}
	}
	return d.rep.Report()
}

// ConfigError is a start-up error caused by one field of Config (a listen
// address in use, an unusable state directory...): Field names it, so that
// a program can tell its user which of its own options to fix.
type ConfigError struct {
	Field string // e.g. "StateDir", "Metrics", "ControlPath"
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }
