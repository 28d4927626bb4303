package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestCloseEndsEverything leaves a SOCKS5 tunnel, a UDP association, an
// HTTP CONNECT tunnel and a kept-alive forwarded connection open, closes
// the proxies and the mesh, and checks that every goroutine ends.
func TestCloseEndsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("busy", func(t *testing.T) {
		m := newTestMesh(t)
		m.serveBetaWeb(t)
		m.serveBetaUDPEcho(t)
		s, socksAddr, _ := startSOCKS(t, m, nil)
		h, httpAddr, _ := startHTTP(t, m, nil)

		tunnel, _, err := dialSOCKS(t, socksAddr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if rep, _, err := tunnel.request(cmdConnect, "beta", 80); rep != repSucceeded {
			t.Fatalf("CONNECT: %#x, %v", rep, err)
		}
		ctl, _, err := dialSOCKS(t, socksAddr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		rep, relay, err := ctl.request(cmdUDPAssociate, "0.0.0.0", 0)
		if rep != repSucceeded {
			t.Fatalf("UDP ASSOCIATE: %#x, %v", rep, err)
		}
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		if _, _, err := udpRoundTrip(udp, relay, "beta", 7, "x"); err != nil {
			t.Fatal(err)
		}
		resp := proxyGet(t, httpAddr, "CONNECT", "beta:80", http.Header{})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP CONNECT: %s", resp.Status)
		}
		proxyURL, _ := url.Parse("http://" + httpAddr)
		tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
		defer tr.CloseIdleConnections()
		get, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("http://beta/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, get.Body)
		get.Body.Close()

		for name, closer := range map[string]interface{ Close() error }{"socks5": s, "http": h} {
			done := make(chan error, 1)
			go func() { done <- closer.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s Close: %v", name, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s Close did not return", name)
			}
			if err := closer.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s second Close: %v, want net.ErrClosed", name, err)
			}
		}
		// The clients see their connections end.
		for _, c := range []net.Conn{tunnel.conn, ctl.conn} {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Errorf("client connection still open after Close: %v", err)
			}
		}
		if n := s.t.count() + h.t.count(); n != 0 {
			t.Errorf("%d sockets still tracked after Close", n)
		}
		// A closed proxy refuses new work.
		ln := listenLoopback(t)
		if err := s.Serve(ln); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve after Close: %v", err)
		}
	})
	testutil.WaitGoroutines(t, base)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
