package daemon

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/peerbook"
)

type reloadResult struct {
	book *peerbook.Book
	err  error
}

// watchReloads sets cfg.OnReload to send each result on the channel it
// returns.
func watchReloads(cfg *Config) <-chan reloadResult {
	ch := make(chan reloadResult, 16)
	cfg.OnReload = func(b *peerbook.Book, err error) { ch <- reloadResult{b, err} }
	return ch
}

func nextReload(t *testing.T, ch <-chan reloadResult) reloadResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reload within 10 s")
		return reloadResult{}
	}
}

// TestFollowFile: a changed book file is applied to the running node; a
// refused version keeps the running book and shows in the report, until a
// good one replaces it.
func TestFollowFile(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	reloads := watchReloads(&cfg)
	d := start(t, cfg)

	m.addMember(t, "beta", 2)
	r := nextReload(t, reloads)
	if r.err != nil || r.book.Serial != 2 {
		t.Fatalf("after adding beta: %+v", r)
	}
	if b := d.Node().Book(); b.Serial != 2 || len(b.Peers) != 2 {
		t.Errorf("node runs serial %d with %d members, want 2 and 2", b.Serial, len(b.Peers))
	}

	if err := os.WriteFile(m.book, []byte("format = 1\nbogus = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = nextReload(t, reloads)
	var perr *peerbook.Error
	if !errors.As(r.err, &perr) || !strings.Contains(r.err.Error(), m.book+":") {
		t.Fatalf("bad book: %+v, want a peerbook.Error naming the file", r)
	}
	rep, err := control.NewClient(cfg.ControlPath).Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastRejection == nil || !strings.Contains(rep.LastRejection.Error, "bogus") || rep.BookSerial != 2 {
		t.Errorf("report after a refused book: rejection %+v, serial %d", rep.LastRejection, rep.BookSerial)
	}

	m.addMember(t, "gamma", 3)
	if r := nextReload(t, reloads); r.err != nil || r.book.Serial != 3 {
		t.Fatalf("after adding gamma: %+v", r)
	}
	if rep := d.Report(); rep.LastRejection != nil || rep.BookSerial != 3 || len(rep.Peers) != 2 {
		t.Errorf("report after a good book: rejection %+v, serial %d, %d peers", rep.LastRejection, rep.BookSerial, len(rep.Peers))
	}
}

// memSource is a book source in memory: versions sent on its channel
// reach the daemon. It counts reload requests.
type memSource struct {
	first   *peerbook.Book
	ch      chan booksource.Update
	reloads atomic.Int32
}

func (s *memSource) Follow(ctx context.Context, reload <-chan struct{}, _ booksource.Options) (booksource.Update, <-chan booksource.Update, error) {
	out := make(chan booksource.Update)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				s.reloads.Add(1)
			case u := <-s.ch:
				select {
				case out <- u:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return booksource.Update{Book: s.first}, out, nil
}

func (s *memSource) String() string { return "mem://test" }

// TestSourceByScheme: a source plugged in by scheme through
// Config.Sources serves the book and its changes; Reload reaches it.
func TestSourceByScheme(t *testing.T) {
	m := newMesh(t)
	first, err := peerbook.Load(m.book)
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{first: first, ch: make(chan booksource.Update)}
	cfg := m.config(t)
	cfg.Book = "MEM://anything"
	var opened string
	cfg.Sources = map[string]OpenSource{"mem": func(book string) (BookSource, error) {
		opened = book
		return src, nil
	}}
	reloads := watchReloads(&cfg)
	d := start(t, cfg)
	if opened != cfg.Book {
		t.Errorf("the mem source was opened with %q", opened)
	}

	m.addMember(t, "beta", 2)
	next, err := peerbook.Load(m.book)
	if err != nil {
		t.Fatal(err)
	}
	src.ch <- booksource.Update{Book: next}
	if r := nextReload(t, reloads); r.err != nil || d.Node().Book().Serial != 2 {
		t.Fatalf("after the source's update: %+v, node serial %d", r, d.Node().Book().Serial)
	}

	d.Reload()
	deadline := time.Now().Add(10 * time.Second)
	for src.reloads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if src.reloads.Load() != 1 {
		t.Errorf("Reload reached the source %d times, want 1", src.reloads.Load())
	}
}

// TestUnknownScheme: a book URL of a scheme nobody serves is refused,
// naming Book.
func TestUnknownScheme(t *testing.T) {
	m := newMesh(t)
	cfg := m.config(t)
	cfg.Book = "gopher://user:secret@example.net/book"
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = d.Start(t.Context())
	var cerr *ConfigError
	if !errors.As(err, &cerr) || cerr.Field != "Book" || !strings.Contains(err.Error(), `"gopher"`) {
		t.Fatalf("Start = %v, want a ConfigError of Book naming the scheme", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("the error shows the URL's password: %v", err)
	}
}

// TestNewChecks: New refuses a Config without a book or a key.
func TestNewChecks(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{KeyFile: "k"}, "Book"},
		{Config{Book: "b"}, "KeyFile"},
	} {
		_, err := New(tc.cfg)
		var cerr *ConfigError
		if !errors.As(err, &cerr) || cerr.Field != tc.field {
			t.Errorf("New(%+v) = %v, want a ConfigError of %s", tc.cfg, err, tc.field)
		}
	}
}
