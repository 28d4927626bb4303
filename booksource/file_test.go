package booksource

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// startWatch starts a file source that ends with the test.
func startWatch(t *testing.T, path string, reload <-chan struct{}, opts Options, watch bool) (Update, <-chan Update) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	first, ch, err := watchFile(ctx, path, reload, opts, watch)
	if err != nil {
		cancel()
		t.Fatalf("WatchFile: %v", err)
	}
	t.Cleanup(func() { expectClosed(t, cancel, ch) })
	return first, ch
}

func TestWatchFileInitialLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	first, _ := startWatch(t, path, nil, Options{}, true)
	if first.Err != nil || first.Book == nil || first.Book.Serial != 1 || len(first.Book.Peers) != 2 {
		t.Fatalf("first = %+v", first)
	}
	if string(first.Raw) != string(makeBook(1, 0)) {
		t.Error("Raw is not the file's content")
	}
}

func TestWatchFileBadStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	_, _, err := WatchFile(ctx, path, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("missing book: %v", err)
	}

	writeFile(t, path, []byte("format = 1\nbogus = 2\n"))
	_, _, err = WatchFile(ctx, path, nil, Options{})
	var perr *peerbook.Error
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), path+":") {
		t.Errorf("invalid book: %v", err)
	}
}

func TestWatchFileRenameReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	_, ch := startWatch(t, path, nil, Options{}, true)

	replaceFile(t, path, makeBook(2, 1))
	u := recv(t, ch)
	if u.Err != nil || u.Book.Serial != 2 || len(u.Book.Peers) != 3 {
		t.Fatalf("after rename: %+v", u)
	}
	// And again: the watch survives the replaced inode.
	replaceFile(t, path, makeBook(3, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 3 {
		t.Fatalf("after second rename: %+v", u)
	}
	expectQuiet(t, ch)
}

func TestWatchFileInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	_, ch := startWatch(t, path, nil, Options{}, true)

	writeFile(t, path, makeBook(2, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 {
		t.Fatalf("after write: %+v", u)
	}
	// Rewriting the same bytes, or touching the file, is no news.
	writeFile(t, path, makeBook(2, 0))
	now := time.Now()
	os.Chtimes(path, now, now)
	expectQuiet(t, ch)
}

func TestWatchFileInvalidThenValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	_, ch := startWatch(t, path, nil, Options{}, true)

	bad := strings.Replace(string(makeBook(2, 0)), "networks", "netwerks", 1)
	replaceFile(t, path, []byte(bad))
	u := recvErr(t, ch)
	var perr *peerbook.Error
	if !errors.As(u.Err, &perr) || !strings.Contains(u.Err.Error(), path+":") {
		t.Errorf("refusal is not a peerbook.Error naming the file: %v", u.Err)
	}
	if string(u.Raw) != bad {
		t.Error("refused update does not carry the refused bytes")
	}

	replaceFile(t, path, makeBook(3, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 3 {
		t.Fatalf("valid book after an invalid one: %+v", u)
	}
}

func TestWatchFileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	_, ch := startWatch(t, path, nil, Options{}, true)

	os.Remove(path)
	u := recvErr(t, ch)
	if !errors.Is(u.Err, os.ErrNotExist) {
		t.Errorf("removed book: %v", u.Err)
	}
	expectQuiet(t, ch)
	// The running book never stopped: its return is no news.
	writeFile(t, path, makeBook(1, 0))
	expectQuiet(t, ch)
	writeFile(t, path, makeBook(2, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 {
		t.Fatalf("new book: %+v", u)
	}
}

func TestWatchFileReloadChannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	reload := make(chan struct{})
	// No file watcher: only the reload channel can notice the change.
	_, ch := startWatch(t, path, reload, Options{}, false)

	writeFile(t, path, makeBook(2, 0))
	expectQuiet(t, ch)
	select {
	case reload <- struct{}{}:
	case <-time.After(wait):
		t.Fatal("reload not received")
	}
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 {
		t.Fatalf("after reload: %+v", u)
	}
	// A reload with nothing changed sends nothing.
	reload <- struct{}{}
	expectQuiet(t, ch)
}

func TestWatchFileStopsOnCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "book.toml")
	writeFile(t, path, makeBook(1, 0))
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	_, ch, err := WatchFile(ctx, path, make(chan struct{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A pending change that nobody receives must not block the exit.
	writeFile(t, path, makeBook(2, 0))
	time.Sleep(2 * debounce)
	cancel()
	deadline := time.After(wait)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("updates not closed after cancel")
		}
	}
	testutil.WaitGoroutines(t, before)
}

func TestWatchFileSigned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	stateDir := filepath.Join(dir, "state")
	admin := newSigner(t)
	opts := Options{TrustedSigners: allowedFor(t, "admin@example.com", admin), StateDir: stateDir}

	writeSigned := func(data []byte) {
		writeFile(t, path, data)
		writeFile(t, path+SigSuffix, sign(t, admin, data))
	}
	writeSigned(makeBook(5, 0))
	first, ch := startWatch(t, path, nil, opts, true)
	if first.Err != nil || first.Book.Serial != 5 || first.Signer != "admin@example.com" {
		t.Fatalf("first = %+v", first)
	}
	st, err := os.Stat(filepath.Join(stateDir, SerialFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", st, err)
	}

	t.Run("book and signature written together count once", func(t *testing.T) {
		data := makeBook(6, 0)
		writeFile(t, path, data)
		time.Sleep(debounce / 4)
		writeFile(t, path+SigSuffix, sign(t, admin, data))
		if u := recv(t, ch); u.Err != nil || u.Book.Serial != 6 {
			t.Fatalf("signed update: %+v", u)
		}
		expectQuiet(t, ch)
	})

	refusals := []struct {
		name  string
		write func()
		want  error
	}{
		{"tampered book", func() {
			data := makeBook(7, 0)
			sig := sign(t, admin, data)
			data = []byte(strings.Replace(string(data), "10.42.0.2", "10.42.0.9", 1))
			writeFile(t, path, data)
			writeFile(t, path+SigSuffix, sig)
		}, booksign.ErrBadSignature},
		{"unknown signer", func() {
			data := makeBook(8, 0)
			writeFile(t, path, data)
			writeFile(t, path+SigSuffix, sign(t, newSigner(t), data))
		}, booksign.ErrUnknownSigner},
		{"unsigned book", func() {
			os.Remove(path + SigSuffix)
			writeFile(t, path, makeBook(9, 0))
		}, booksign.ErrNoSignature},
		{"malformed signature", func() {
			writeFile(t, path, makeBook(10, 0))
			writeFile(t, path+SigSuffix, []byte("not a signature\n"))
		}, booksign.ErrMalformed},
		{"lower serial", func() { writeSigned(makeBook(4, 0)) }, ErrStaleSerial},
		{"same serial, other content", func() { writeSigned(makeBook(6, 1)) }, ErrStaleSerial},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			tt.write()
			u := recvErr(t, ch)
			if !errors.Is(u.Err, tt.want) {
				t.Fatalf("err = %v, want %v", u.Err, tt.want)
			}
			if !strings.Contains(u.Err.Error(), path) {
				t.Errorf("error does not name the file: %v", u.Err)
			}
			expectQuiet(t, ch)
		})
	}

	// Back to the running book, re-signed: identical content is no news.
	writeSigned(makeBook(6, 0))
	expectQuiet(t, ch)
	writeSigned(makeBook(11, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 11 {
		t.Fatalf("next good book: %+v", u)
	}
}

func TestWatchFileSerialSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	stateDir := filepath.Join(dir, "state")
	admin := newSigner(t)
	opts := Options{TrustedSigners: allowedFor(t, "admin", admin), StateDir: stateDir}
	writeSigned := func(data []byte) {
		writeFile(t, path, data)
		writeFile(t, path+SigSuffix, sign(t, admin, data))
	}

	writeSigned(makeBook(7, 0))
	ctx, cancel := context.WithCancel(context.Background())
	_, ch, err := WatchFile(ctx, path, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	expectClosed(t, cancel, ch)

	// A rolled-back book at start is refused, the state having survived.
	writeSigned(makeBook(6, 0))
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := WatchFile(ctx, path, nil, opts); !errors.Is(err, ErrStaleSerial) || !strings.Contains(err.Error(), "lower than 7") {
		t.Fatalf("restart with a lower serial: %v", err)
	}
	// So is a changed book under the same serial.
	writeSigned(makeBook(7, 1))
	if _, _, err := WatchFile(ctx, path, nil, opts); !errors.Is(err, ErrStaleSerial) || !strings.Contains(err.Error(), "serial not increased") {
		t.Fatalf("restart with the same serial, other content: %v", err)
	}
	// The very book last applied starts fine.
	writeSigned(makeBook(7, 0))
	first, _ := startWatch(t, path, nil, opts, true)
	if first.Err != nil || first.Book.Serial != 7 {
		t.Fatalf("restart with the applied book: %+v", first)
	}

	// Without a signature at start: refused.
	os.Remove(path + SigSuffix)
	if _, _, err := WatchFile(ctx, path, nil, opts); !errors.Is(err, booksign.ErrNoSignature) || !strings.Contains(err.Error(), path+SigSuffix) {
		t.Fatalf("missing .sig at start: %v", err)
	}

	// A damaged state file stops the start instead of silently resetting
	// the rollback protection.
	writeSigned(makeBook(7, 0))
	writeFile(t, filepath.Join(stateDir, SerialFile), []byte("seven\n"))
	if _, _, err := WatchFile(ctx, path, nil, opts); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged state: %v", err)
	}
}

func TestWatchFileUnsignedIgnoresSerial(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	writeFile(t, path, makeBook(5, 0))
	_, ch := startWatch(t, path, nil, Options{StateDir: filepath.Join(dir, "state")}, true)
	writeFile(t, path, makeBook(3, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 3 {
		t.Fatalf("lower serial without signers: %+v", u)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", SerialFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serial recorded without signers: %v", err)
	}
}

func TestWatchFileSymlinkTarget(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "repo", "book.toml")
	os.Mkdir(filepath.Dir(real), 0o755)
	writeFile(t, real, makeBook(1, 0))
	link := filepath.Join(dir, "etc", "book.toml")
	os.Mkdir(filepath.Dir(link), 0o755)
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	_, ch := startWatch(t, link, nil, Options{}, true)
	writeFile(t, real, makeBook(2, 0))
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 {
		t.Fatalf("edit of the symlink's target: %+v", u)
	}
}
