package booksource

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// noProxyChild marks the child process of TestNoProxyFromEnvironment. A
// child is needed because net/http reads the proxy variables once per
// process: set in a test they would be missed by a client already used.
const noProxyChild = "WGMESH_TEST_NO_PROXY_CHILD"

// TestNoProxyFromEnvironment: the README promises that a remote book is
// never fetched through a proxy from the environment. The book's host is
// not a loopback name (net/http never proxies loopback, so such a test
// could not fail); lookups of it fail in the child, so nothing leaves the
// host, while a proxy from the environment would be asked first.
func TestNoProxyFromEnvironment(t *testing.T) {
	if os.Getenv(noProxyChild) == "1" {
		noProxyFetch(t)
		return
	}
	var (
		mu       sync.Mutex
		requests []string
	)
	book := makeBook(1, 0)
	proxySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.RequestURI)
		mu.Unlock()
		if r.Method == http.MethodConnect {
			http.Error(w, "no tunnels here", http.StatusForbidden)
			return
		}
		w.Write(book) // a proxy in the path could serve any book
	}))
	defer proxySrv.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestNoProxyFromEnvironment$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), noProxyChild+"=1",
		"HTTPS_PROXY="+proxySrv.URL, "https_proxy="+proxySrv.URL,
		"HTTP_PROXY="+proxySrv.URL, "http_proxy="+proxySrv.URL,
		"ALL_PROXY="+proxySrv.URL, "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) > 0 {
		t.Fatalf("the book was fetched through the proxy from the environment: %q\n%s", requests, out)
	}
}

// noProxyFetch runs in the child: every fetch must fail on the name
// lookup, never reach the proxy.
func noProxyFetch(t *testing.T) {
	lookups := 0
	var mu sync.Mutex
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		mu.Lock()
		lookups++
		mu.Unlock()
		return nil, errors.New("no DNS in this test")
	}}
	for _, url := range []string{"https://book.wgmesh-test.example/book.toml", "http://book.wgmesh-test.example/book.toml"} {
		ctx, cancel := context.WithCancel(context.Background())
		_, ch, err := PollURL(ctx, url, time.Hour, Options{}, HTTPOptions{AllowHTTP: true, Timeout: 5 * time.Second})
		if err == nil {
			expectClosed(t, cancel, ch)
			t.Fatalf("%s: fetched a book, though its name does not resolve", url)
		}
		cancel()
		if !strings.Contains(err.Error(), "no DNS in this test") {
			t.Errorf("%s: %v; want the failed lookup of the book's host", url, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if lookups == 0 {
		t.Error("the book's host was never looked up")
	}
}
