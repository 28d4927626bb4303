package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/forward"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// fullConfig is mesh.config with a forward and an expose too: every step
// of the start-up sets something up.
func fullConfig(t *testing.T, m *mesh) Config {
	t.Helper()
	cfg := m.config(t)
	fwd, err := forward.ParseForward("tcp:127.0.0.1:0=alpha:80")
	if err != nil {
		t.Fatal(err)
	}
	exp, err := forward.ParseExpose("tcp:9000=127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Forwards, cfg.Exposes = []forward.Spec{fwd}, []forward.Spec{exp}
	return cfg
}

// recorder keeps the undo list's changes, each with the start step that
// was running.
type recorder struct {
	mu     sync.Mutex
	step   string
	pushed []string // "step/name"
	undone []string // name
}

func (r *recorder) hooks(fail string, failErr error) *hooks {
	return &hooks{
		before: func(step string) error {
			r.mu.Lock()
			r.step = step
			r.mu.Unlock()
			if step == fail {
				return failErr
			}
			return nil
		},
		pushed: func(name string) {
			r.mu.Lock()
			r.pushed = append(r.pushed, r.step+"/"+name)
			r.mu.Unlock()
		},
		undone: func(name string) {
			r.mu.Lock()
			r.undone = append(r.undone, name)
			r.mu.Unlock()
		},
	}
}

func stepNames() []string {
	var names []string
	for _, s := range (&Daemon{}).steps() {
		names = append(names, s.name)
	}
	return names
}

// checkReleased makes sure a stopped daemon left nothing behind: its
// control socket is gone and every host port it bound can be bound again.
func checkReleased(t *testing.T, d *Daemon) {
	t.Helper()
	if _, err := os.Lstat(d.cfg.ControlPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket still there: %v", err)
	}
	for name, addr := range d.Addrs() {
		network := "tcp"
		if name == "dns" {
			network = "udp"
		}
		var err error
		if network == "tcp" {
			var ln net.Listener
			if ln, err = net.Listen(network, addr); err == nil {
				ln.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(network, addr); err == nil {
				pc.Close()
			}
		}
		if err != nil {
			t.Errorf("%s %s still bound: %v", name, addr, err)
		}
	}
}

// TestStartFailureUndoesInReverse fails the start-up before each step in
// turn: everything the earlier steps set up is undone, in the reverse
// order of setting it up, and nothing is left running.
func TestStartFailureUndoesInReverse(t *testing.T) {
	names := stepNames()
	for i, fail := range names {
		t.Run(fail, func(t *testing.T) {
			before := runtime.NumGoroutine()
			m := newMesh(t)
			cfg := fullConfig(t, m)
			rec := &recorder{}
			injected := fmt.Errorf("injected failure before %s", fail)
			cfg.hooks = rec.hooks(fail, injected)
			d, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Start(t.Context()); !errors.Is(err, injected) {
				t.Fatalf("Start = %v, want the injected failure", err)
			}
			var want []string
			for _, p := range rec.pushed {
				step, name, _ := strings.Cut(p, "/")
				if k := slices.Index(names, step); k < 0 || k >= i {
					t.Errorf("%s registered during step %s, not before %s", name, step, fail)
				}
				want = append([]string{name}, want...)
			}
			if !slices.Equal(rec.undone, want) {
				t.Errorf("undone %v, want %v (the reverse of %v)", rec.undone, want, rec.pushed)
			}
			if i > 1 && len(rec.pushed) == 0 {
				t.Errorf("nothing was set up before %s", fail)
			}
			select {
			case <-d.Done():
			default:
				t.Error("Done not closed after a failed Start")
			}
			checkReleased(t, d)
			if err := d.Close(); err != nil {
				t.Errorf("Close after a failed Start: %v", err)
			}
			if len(rec.undone) != len(want) {
				t.Errorf("Close undid something again: %v", rec.undone)
			}
			testutil.WaitGoroutines(t, before)
		})
	}
}

// TestStartFailureInsideAStep: a real failure in the middle of a step (the
// DNS port in use, after the metrics and proxy listeners were bound)
// releases what that step and the earlier ones bound.
func TestStartFailureInsideAStep(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	m := newMesh(t)
	cfg := m.config(t)
	cfg.DNS = busy.LocalAddr().String()
	rec := &recorder{}
	cfg.hooks = rec.hooks("", nil)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(t.Context())
	var cerr *ConfigError
	if !errors.As(err, &cerr) || cerr.Field != "DNS" || !strings.Contains(err.Error(), "cannot listen on "+cfg.DNS+" (udp)") {
		t.Fatalf("Start = %v, want a ConfigError of DNS", err)
	}
	want := []string{"http_proxy listener", "socks listener", "metrics listener", "source"}
	if !slices.Equal(rec.undone, want) {
		t.Errorf("undone %v, want %v", rec.undone, want)
	}
	a := d.Addrs()
	delete(a, "dns")
	if len(a) != 3 {
		t.Fatalf("bound %v, want metrics, socks and http_proxy", a)
	}
	for name, addr := range a {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s %s still bound: %v", name, addr, err)
			continue
		}
		ln.Close()
	}
}

func get(url string) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestShutdownOrder: Close undoes the start-up backwards. Readiness goes
// first, so /readyz answers 503 while the rest shuts down, and the control
// socket closes next, before the node does.
func TestShutdownOrder(t *testing.T) {
	m := newMesh(t)
	cfg := fullConfig(t, m)
	rec := &recorder{}
	cfg.hooks = rec.hooks("", nil)
	var during struct {
		readyz       []int // /readyz while undoing control, then follow, then services
		ctlAtFollow  error
		ctlAtControl error // the control socket until its own undo
		fwdAtRelays  error // a forward until its own undo
	}
	h := cfg.hooks
	undone := h.undone
	var metricsURL, fwdAddr string
	h.undone = func(name string) {
		undone(name)
		switch name {
		case "control":
			_, during.ctlAtControl = control.NewClient(cfg.ControlPath).Status(context.Background())
		case "relays":
			var c net.Conn
			if c, during.fwdAtRelays = net.DialTimeout("tcp", fwdAddr, 5*time.Second); c != nil {
				c.Close()
			}
		}
		switch name {
		case "control", "follow", "services":
			code, err := get(metricsURL + "/readyz")
			if err != nil {
				t.Errorf("/readyz while undoing %s: %v", name, err)
			}
			during.readyz = append(during.readyz, code)
			if name == "follow" {
				_, during.ctlAtFollow = control.NewClient(cfg.ControlPath).Status(context.Background())
			}
		}
	}
	d := start(t, cfg)
	metricsURL = "http://" + d.Addrs()["metrics"]
	fwdAddr = d.relays[0].ln.Addr().String()
	if code, err := get(metricsURL + "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz when started: %d, %v", code, err)
	}
	if _, err := control.NewClient(cfg.ControlPath).Status(t.Context()); err != nil {
		t.Fatalf("control socket when started: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"ready", "control", "follow", "relays", "services", "expose", "metrics", "node",
		"dns listener", "http_proxy listener", "socks listener", "metrics listener", "forward", "source"}
	if !slices.Equal(rec.undone, want) {
		t.Errorf("shutdown order %v,\nwant %v", rec.undone, want)
	}
	if !slices.Equal(during.readyz, []int{503, 503, 503}) {
		t.Errorf("/readyz during the shutdown answered %v, want 503 each time", during.readyz)
	}
	if during.ctlAtControl != nil || during.fwdAtRelays != nil {
		t.Errorf("stopped before their own undo: control socket %v, forward %v", during.ctlAtControl, during.fwdAtRelays)
	}
	if during.ctlAtFollow == nil {
		t.Error("the control socket still answered once readiness and control were undone")
	}
	checkReleased(t, d)
}

// TestCloseTwice: Close is idempotent.
func TestCloseTwice(t *testing.T) {
	before := runtime.NumGoroutine()
	m := newMesh(t)
	d := start(t, m.config(t))
	for i := range 3 {
		if err := d.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	<-d.Done()
	if err := d.Err(); err != nil {
		t.Errorf("Err after Close: %v", err)
	}
	checkReleased(t, d)
	testutil.WaitGoroutines(t, before)
}

// TestCloseBeforeStart: Close on a daemon never started is fine, and a
// later Start starts nothing.
func TestCloseBeforeStart(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	rec := &recorder{}
	cfg.hooks = rec.hooks("", nil)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := d.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	if rec.step != "" || len(rec.pushed) != 0 {
		t.Errorf("Start after Close ran step %q, set up %v", rec.step, rec.pushed)
	}
	if _, err := os.Lstat(cfg.ControlPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket created: %v", err)
	}
}

// TestStartOnce: a second Start returns the first one's result and runs
// no step again.
func TestStartOnce(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	var runs int
	injected := errors.New("injected")
	cfg.hooks = &hooks{before: func(step string) error {
		runs++
		if step == "node" {
			return injected
		}
		return nil
	}}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	first := d.Start(t.Context())
	n := runs
	if second := d.Start(t.Context()); second != first || !errors.Is(second, injected) || runs != n {
		t.Errorf("second Start = %v after %d more steps; want %v and none", second, runs-n, first)
	}
}

// blockingSource never delivers a first book: it waits for its context.
type blockingSource struct{ entered chan struct{} }

func (s blockingSource) Follow(ctx context.Context, _ <-chan struct{}, _ booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
	close(s.entered)
	<-ctx.Done()
	return booksource.Update{}, nil, ctx.Err()
}

func (blockingSource) String() string { return "blocking" }

// TestCloseDuringStart: Close aborts a start-up that is waiting for the
// book, and Start says the daemon was closed.
func TestCloseDuringStart(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	src := blockingSource{make(chan struct{})}
	cfg.Source = src
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- d.Start(context.Background()) }()
	<-src.entered
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-started:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Start = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start still waiting 10 s after Close")
	}
}

// TestStartContextBoundsStartOnly: a cancelled ctx aborts the start-up;
// once started, the daemon runs until Close whatever becomes of ctx.
func TestStartContextBoundsStartOnly(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	cfg.Source = blockingSource{make(chan struct{})}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := d.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with an expiring ctx = %v", err)
	}

	m2 := newMesh(t)
	ctx2, cancel2 := context.WithCancel(t.Context())
	d2, err := New(m2.config(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if err := d2.Start(ctx2); err != nil {
		t.Fatal(err)
	}
	cancel2()
	time.Sleep(100 * time.Millisecond)
	if _, err := control.NewClient(m2.config(t).ControlPath).Status(t.Context()); err != nil {
		t.Errorf("control socket gone after the start ctx ended: %v", err)
	}
	select {
	case <-d2.Done():
		t.Error("daemon stopped when the start ctx ended")
	default:
	}
}

// failingListener accepts nothing and fails for good once broken is
// closed, as a listener whose socket the system took away would.
type failingListener struct {
	net.Listener
	broken chan struct{}
}

var errBroken = errors.New("listener broken")

func (l failingListener) Accept() (net.Conn, error) {
	<-l.broken
	return nil, errBroken
}

// TestRelayFailureStopsDaemon: a forward that fails while running stops
// the daemon: Done closes, Err and Close name the forward and the cause,
// and the rest shuts down as on a plain Close.
func TestRelayFailureStopsDaemon(t *testing.T) {
	m := newMesh(t)
	cfg := fullConfig(t, m)
	cfg.Exposes = nil
	broken := make(chan struct{})
	var d *Daemon
	cfg.hooks = &hooks{before: func(step string) error {
		if step == "relays" { // the forward's listener is bound: break it
			r := d.relays[0]
			r.ln = failingListener{r.ln, broken}
		}
		return nil
	}}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
		t.Fatal("Done before any failure")
	default:
	}
	close(broken)
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10 s after the forward failed")
	}
	if err := d.Err(); !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "--forward tcp:127.0.0.1:0=alpha:80") {
		t.Errorf("Err = %v, want the forward and its failure", err)
	}
	if err := d.Close(); !errors.Is(err, errBroken) {
		t.Errorf("Close = %v, want the failure", err)
	}
	checkReleased(t, d)
}
