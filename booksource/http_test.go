package booksource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// bookServer serves /book.toml and /book.toml.sig with ETags, and can be
// told to fail or stall.
type bookServer struct {
	*httptest.Server
	unstall chan struct{}

	mu          sync.Mutex
	book, sig   []byte
	status      int  // answer this instead, when not 0
	stall       bool // never answer
	noLength    bool // stream the body without Content-Length
	bookGets    int
	conditional int // book requests with the current ETag in If-None-Match
	notModified int
}

func newBookServer(t *testing.T, tlsServer bool) *bookServer {
	s := &bookServer{unstall: make(chan struct{})}
	h := http.HandlerFunc(s.serve)
	if tlsServer {
		s.Server = httptest.NewTLSServer(h)
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		close(s.unstall)
		s.Close()
	})
	return s
}

func etagOf(b []byte) string {
	h := sha256.Sum256(b)
	return `"` + hex.EncodeToString(h[:8]) + `"`
}

func (s *bookServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	stall, status, noLength := s.stall, s.status, s.noLength
	var body []byte
	switch r.URL.Path {
	case "/book.toml":
		body = s.book
		s.bookGets++
		if body != nil && r.Header.Get("If-None-Match") == etagOf(body) {
			s.conditional++
		}
	case "/book.toml.sig":
		body = s.sig
	}
	s.mu.Unlock()

	if stall {
		select {
		case <-r.Context().Done():
		case <-s.unstall:
		}
		return
	}
	if status != 0 {
		http.Error(w, "failing on purpose", status)
		return
	}
	if body == nil {
		http.NotFound(w, r)
		return
	}
	etag := etagOf(body)
	if r.Header.Get("If-None-Match") == etag {
		s.mu.Lock()
		s.notModified++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
	if noLength {
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		w.Write(body[len(body)/2:])
		return
	}
	w.Write(body)
}

func (s *bookServer) set(f func(s *bookServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *bookServer) counts() (gets, conditional, notModified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bookGets, s.conditional, s.notModified
}

const testPoll = 30 * time.Millisecond

func startPoll(t *testing.T, url string, opts Options, hopts HTTPOptions) (Update, <-chan Update) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	first, ch, err := PollURL(ctx, url, testPoll, opts, hopts)
	if err != nil {
		cancel()
		t.Fatalf("PollURL: %v", err)
	}
	t.Cleanup(func() { expectClosed(t, cancel, ch) })
	return first, ch
}

func TestPollURLUpdate(t *testing.T) {
	srv := newBookServer(t, true)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	first, ch := startPoll(t, srv.URL+"/book.toml", Options{}, HTTPOptions{Client: srv.Client()})
	if first.Err != nil || first.Book.Serial != 1 || first.FromCache {
		t.Fatalf("first = %+v", first)
	}
	srv.set(func(s *bookServer) { s.book = makeBook(2, 1) })
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 || len(u.Book.Peers) != 3 {
		t.Fatalf("update = %+v", u)
	}
	expectQuiet(t, ch)
}

func TestPollURLNotModified(t *testing.T) {
	srv := newBookServer(t, true)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	_, ch := startPoll(t, srv.URL+"/book.toml", Options{}, HTTPOptions{Client: srv.Client()})

	deadline := time.Now().Add(wait)
	for {
		gets, conditional, notModified := srv.counts()
		if gets >= 4 && conditional >= 3 && notModified >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d requests, %d with If-None-Match, %d answered 304", wait, gets, conditional, notModified)
		}
		time.Sleep(testPoll)
	}
	expectQuiet(t, ch)
}

func TestPollURLServerError(t *testing.T) {
	srv := newBookServer(t, true)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	_, ch := startPoll(t, srv.URL+"/book.toml", Options{}, HTTPOptions{Client: srv.Client()})

	srv.set(func(s *bookServer) { s.status = http.StatusInternalServerError })
	u := recvErr(t, ch)
	if !strings.Contains(u.Err.Error(), "500") || !strings.Contains(u.Err.Error(), srv.URL+"/book.toml") {
		t.Errorf("500: %v", u.Err)
	}
	srv.set(func(s *bookServer) { s.status, s.book = 0, makeBook(2, 0) })
	if u := recvBook(t, ch); u.Book.Serial != 2 {
		t.Fatalf("after recovery: serial %d", u.Book.Serial)
	}
}

func TestPollURLOversized(t *testing.T) {
	for _, noLength := range []bool{false, true} {
		name := "content-length"
		if noLength {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			srv := newBookServer(t, true)
			small := makeBook(1, 0)
			srv.set(func(s *bookServer) { s.book, s.noLength = small, noLength })
			hopts := HTTPOptions{Client: srv.Client(), MaxSize: int64(len(small) + 10)}
			_, ch := startPoll(t, srv.URL+"/book.toml", Options{}, hopts)

			srv.set(func(s *bookServer) { s.book = makeBook(2, 5) })
			u := recvErr(t, ch)
			if !strings.Contains(u.Err.Error(), "over the limit") {
				t.Errorf("oversized: %v", u.Err)
			}

			// Too big at start, with nothing cached: no start.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, _, err := PollURL(ctx, srv.URL+"/book.toml", testPoll, Options{}, hopts); err == nil || !strings.Contains(err.Error(), "over the limit") {
				t.Errorf("oversized at start: %v", err)
			}
		})
	}
}

func TestPollURLStall(t *testing.T) {
	srv := newBookServer(t, true)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	_, ch := startPoll(t, srv.URL+"/book.toml", Options{}, HTTPOptions{Client: srv.Client(), Timeout: 200 * time.Millisecond})

	srv.set(func(s *bookServer) { s.stall = true })
	start := time.Now()
	u := recvErr(t, ch)
	if !strings.Contains(u.Err.Error(), "no complete answer within 200ms") {
		t.Errorf("stall: %v", u.Err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stall reported after %v", d)
	}
}

func TestPollURLCacheRestart(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	admin := newSigner(t)
	opts := Options{TrustedSigners: allowedFor(t, "admin", admin), StateDir: stateDir}
	srv := newBookServer(t, true)
	book := makeBook(3, 0)
	srv.set(func(s *bookServer) { s.book, s.sig = book, sign(t, admin, book) })
	url := srv.URL + "/book.toml"
	client := srv.Client()

	ctx, cancel := context.WithCancel(context.Background())
	first, ch, err := PollURL(ctx, url, testPoll, opts, HTTPOptions{Client: client})
	if err != nil || first.Book.Serial != 3 || first.Signer != "admin" {
		t.Fatalf("first = %+v, %v", first, err)
	}
	book = makeBook(4, 1)
	srv.set(func(s *bookServer) { s.book, s.sig = book, sign(t, admin, book) })
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 4 {
		t.Fatalf("update = %+v", u)
	}
	expectClosed(t, cancel, ch)
	for _, name := range []string{CachedBook, CachedBookSig, SerialFile} {
		if st, err := os.Stat(filepath.Join(stateDir, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", name, st, err)
		}
	}

	srv.Close()
	first, _ = startPoll(t, url, opts, HTTPOptions{Client: client, Timeout: time.Second})
	if !first.FromCache || first.Err != nil || first.Book.Serial != 4 || first.Signer != "admin" {
		t.Fatalf("restart with the server down: %+v", first)
	}

	// No cache, no server: a clear error.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_, _, err = PollURL(ctx, url, testPoll, Options{StateDir: t.TempDir()}, HTTPOptions{Client: client, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no cached book") || !strings.Contains(err.Error(), url) {
		t.Errorf("no cache, no server: %v", err)
	}
	_, _, err = PollURL(ctx, url, testPoll, Options{}, HTTPOptions{Client: client, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no state dir") {
		t.Errorf("no state dir, no server: %v", err)
	}
}

func TestPollURLSigned(t *testing.T) {
	admin := newSigner(t)
	opts := Options{TrustedSigners: allowedFor(t, "admin", admin), StateDir: t.TempDir()}
	srv := newBookServer(t, true)
	url := srv.URL + "/book.toml"
	hopts := HTTPOptions{Client: srv.Client()}

	// No signature on the server, nothing cached: no start.
	srv.set(func(s *bookServer) { s.book = makeBook(5, 0) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := PollURL(ctx, url, testPoll, opts, hopts); !errors.Is(err, booksign.ErrNoSignature) || !strings.Contains(err.Error(), url+".sig") {
		t.Fatalf("unsigned at start: %v", err)
	}

	book := makeBook(5, 0)
	srv.set(func(s *bookServer) { s.sig = sign(t, admin, book) })
	first, ch := startPoll(t, url, opts, hopts)
	if first.Err != nil || first.Book.Serial != 5 {
		t.Fatalf("first = %+v", first)
	}

	cases := []struct {
		name string
		book []byte
		sig  func(book []byte) []byte
		want error
	}{
		{"missing sig", makeBook(6, 0), func([]byte) []byte { return nil }, booksign.ErrNoSignature},
		{"tampered", makeBook(7, 0), func([]byte) []byte { return sign(t, admin, makeBook(7, 1)) }, booksign.ErrBadSignature},
		{"unknown signer", makeBook(8, 0), func(b []byte) []byte { return sign(t, newSigner(t), b) }, booksign.ErrUnknownSigner},
		{"lower serial", makeBook(4, 0), func(b []byte) []byte { return sign(t, admin, b) }, ErrStaleSerial},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv.set(func(s *bookServer) { s.book, s.sig = c.book, c.sig(c.book) })
			u := recvErr(t, ch)
			if !errors.Is(u.Err, c.want) {
				t.Fatalf("err = %v, want %v", u.Err, c.want)
			}
			expectQuiet(t, ch)
		})
	}
	// The refusals left the cache alone.
	cached, err := os.ReadFile(filepath.Join(opts.StateDir, CachedBook))
	if err != nil || string(cached) != string(book) {
		t.Errorf("cache changed by a refused book: %v", err)
	}
	good := makeBook(9, 0)
	srv.set(func(s *bookServer) { s.book, s.sig = good, sign(t, admin, good) })
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 9 {
		t.Fatalf("good book after refusals: %+v", u)
	}
}

func TestPollURLRefusesPlainHTTP(t *testing.T) {
	srv := newBookServer(t, false)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	url := srv.URL + "/book.toml"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, err := PollURL(ctx, url, testPoll, Options{}, HTTPOptions{})
	if err == nil || !strings.Contains(err.Error(), "--allow-http") {
		t.Fatalf("http:// without AllowHTTP: %v", err)
	}
	if gets, _, _ := srv.counts(); gets != 0 {
		t.Errorf("%d requests made to a refused URL", gets)
	}
	first, _ := startPoll(t, url, Options{}, HTTPOptions{AllowHTTP: true})
	if first.Err != nil || first.Book.Serial != 1 {
		t.Fatalf("http:// with AllowHTTP: %+v", first)
	}

	for _, bad := range []string{"ftp://example.com/book.toml", "file:///etc/book.toml", "https:///book.toml"} {
		if _, _, err := PollURL(ctx, bad, testPoll, Options{}, HTTPOptions{}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestPollURLRefusesDowngradeRedirect(t *testing.T) {
	plain := newBookServer(t, false)
	plain.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	redirector := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/book.toml", http.StatusFound))
	defer redirector.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Even with AllowHTTP: https that was asked for must stay https.
	_, _, err := PollURL(ctx, redirector.URL+"/book.toml", testPoll, Options{}, HTTPOptions{Client: redirector.Client(), AllowHTTP: true})
	if err == nil || !strings.Contains(err.Error(), "refusing redirect from https") {
		t.Fatalf("https -> http redirect: %v", err)
	}
	if gets, _, _ := plain.counts(); gets != 0 {
		t.Errorf("redirect followed: %d requests", gets)
	}
}

func TestPollURLSecretsNotShown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, err := PollURL(ctx, "http://user:hunter2@127.0.0.1:1/book.toml?token=s3cret", testPoll, Options{}, HTTPOptions{})
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows a secret: %v", err)
	}
	_, _, err = PollURL(ctx, "https://user:hunter2@[::1/book.toml", testPoll, Options{}, HTTPOptions{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("parse error shows a secret: %v", err)
	}
	// 127.0.0.1:1 refuses connections: the fetch error must not show them either.
	_, _, err = PollURL(ctx, "http://user:hunter2@127.0.0.1:1/book.toml?token=s3cret", testPoll, Options{}, HTTPOptions{AllowHTTP: true, Timeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows a secret: %v", err)
	}
}

func TestPollURLReloadAndCancel(t *testing.T) {
	srv := newBookServer(t, true)
	srv.set(func(s *bookServer) { s.book = makeBook(1, 0) })
	before := runtime.NumGoroutine()
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	client := srv.Client()
	// A poll interval that never fires in the test: only reload polls.
	_, ch, err := PollURL(ctx, srv.URL+"/book.toml", time.Hour, Options{}, HTTPOptions{Client: client, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	srv.set(func(s *bookServer) { s.book = makeBook(2, 0) })
	expectQuiet(t, ch)
	reload <- struct{}{}
	if u := recv(t, ch); u.Err != nil || u.Book.Serial != 2 {
		t.Fatalf("after reload: %+v", u)
	}

	// Cancel in the middle of a stalled request.
	srv.set(func(s *bookServer) { s.stall = true })
	reload <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	expectClosed(t, cancel, ch)
	client.CloseIdleConnections()
	testutil.WaitGoroutines(t, before)
}
