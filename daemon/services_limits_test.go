package daemon

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/proxy"
)

// startServices runs a daemon with the metrics endpoint and the HTTP
// proxy (with credentials), a short idle timeout and small limits.
func startServices(t *testing.T, idle time.Duration, lim netutil.Limits) (metricsAddr, proxyAddr string) {
	t.Helper()
	m := newMesh(t)
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:s3cret-Pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := proxy.LoadCredentials(users)
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.config(t)
	cfg.SOCKS, cfg.DNS, cfg.ControlPath = "", "", ""
	cfg.ProxyAuth = creds
	cfg.hooks = &hooks{services: func(s *services) {
		s.idle, s.metricsLimits, s.httpLimits = idle, lim, lim
	}}
	d := start(t, cfg)
	a := d.Addrs()
	return a["metrics"], a["http_proxy"]
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
