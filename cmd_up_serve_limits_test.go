package main

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

// soloNode starts a one-member mesh in netstack mode: enough for the
// services of `up` to run on.
func soloNode(t *testing.T) *node.Node {
	t.Helper()
	key, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	book := &peerbook.Book{Format: 1, Serial: 1, Source: "book.toml", Mesh: peerbook.Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420, PersistentKeepalive: 25,
	}, Peers: []peerbook.Peer{{Name: "alpha", PublicKey: key.Public(), Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1")}}}}
	n, err := node.New(node.Config{Book: book, PrivateKey: key, ListenPort: node.EphemeralPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startServices runs the metrics endpoint and the HTTP proxy (with
// credentials) of `up` with a short idle timeout and small limits.
func startServices(t *testing.T, idle time.Duration, lim netutil.Limits) (metricsAddr, proxyAddr string) {
	t.Helper()
	n := soloNode(t)
	cfg := upConfig{metrics: "127.0.0.1:0", httpProxy: "127.0.0.1:0"}
	s, err := bindServices(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.idle, s.metricsLimits, s.httpLimits = idle, lim, lim
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:s3cret-Pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := proxy.LoadCredentials(users)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.start(cfg, n, creds, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	s.serveMetrics(failed)
	t.Cleanup(s.close)
	return s.metricsLn.Addr().String(), s.httpLn.Addr().String()
}

// request sends one keep-alive request on a new connection and reads the
// answer's status; the connection stays open.
func request(t *testing.T, addr, req string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return c, 0
	}
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode
}

const (
	metricsReq = "GET /healthz HTTP/1.1\r\nHost: wgmesh\r\n\r\n"
	// No Proxy-Authorization: answered 407, the connection kept alive.
	proxyReq = "GET http://alpha/ HTTP/1.1\r\nHost: alpha\r\n\r\n"
)

// TestServicesCloseIdleConnections: keep-alive connections of the metrics
// endpoint and the HTTP proxy, unauthenticated ones included, used to stay
// open for ever.
func TestServicesCloseIdleConnections(t *testing.T) {
	metricsAddr, proxyAddr := startServices(t, 200*time.Millisecond, netutil.Limits{Total: 100})
	for _, tc := range []struct{ name, addr, req string }{
		{"metrics", metricsAddr, metricsReq},
		{"http proxy, unauthenticated", proxyAddr, proxyReq},
	} {
		c, code := request(t, tc.addr, tc.req)
		if code == 0 {
			t.Fatalf("%s: no answer", tc.name)
		}
		if !testutil.ClosedWithin(c, 5*time.Second) {
			t.Errorf("%s: an idle keep-alive connection (after a %d) is still open after 5 s, idle timeout 200 ms", tc.name, code)
		}
	}
}

// TestServicesConnectionCap: connections over the cap are closed at once.
func TestServicesConnectionCap(t *testing.T) {
	metricsAddr, proxyAddr := startServices(t, time.Hour, netutil.Limits{Total: 2})
	for _, tc := range []struct{ name, addr, req string }{
		{"metrics", metricsAddr, metricsReq},
		{"http proxy", proxyAddr, proxyReq},
	} {
		for i := range 2 {
			if _, code := request(t, tc.addr, tc.req); code == 0 {
				t.Fatalf("%s: connection %d within the cap got no answer", tc.name, i+1)
			}
		}
		c, code := request(t, tc.addr, tc.req)
		if code != 0 || !testutil.ClosedWithin(c, 5*time.Second) {
			t.Errorf("%s: a third connection over a cap of 2 was served (status %d)", tc.name, code)
		}
	}
}
