package proxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// startHTTP serves an HTTP proxy into the mesh through alpha on 127.0.0.1.
func startHTTP(t *testing.T, m *testMesh, auth *Credentials) (*HTTP, string, *recordingDialer) {
	t.Helper()
	d := &recordingDialer{d: m.alpha()}
	h := &HTTP{Dialer: d, Book: m.alpha().Book, Auth: auth}
	ln := listenLoopback(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
	})
	return h, ln.Addr().String(), d
}

// proxyGet sends one raw proxy request and returns the response.
func proxyGet(t *testing.T, proxyAddr, method, target string, header http.Header) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := &http.Request{Method: method, URL: &url.URL{Opaque: target}, Host: target, Header: header, ProtoMajor: 1, ProtoMinor: 1}
	if method != http.MethodConnect {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		req.URL, req.Host = u, u.Host
	}
	if err := req.WriteProxy(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHTTPProxyCurl(t *testing.T) {
	needCurl(t)
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	_, addr, d := startHTTP(t, m, nil)
	proxyURL := "http://" + addr
	for _, host := range []string{"beta", "beta.mesh", "Beta.Mesh"} {
		// Absolute-form request, then a CONNECT tunnel (-p).
		for _, mode := range [][]string{{"-x", proxyURL}, {"-p", "-x", proxyURL}} {
			args := append(mode, "http://"+host+"/p")
			out, err := runCurl(t, args...)
			if err != nil {
				t.Fatalf("curl %v: %v\n%s", args, err, out)
			}
			if want := "hello from beta: " + host + " /p"; out != want {
				t.Errorf("curl %v: got %q, want %q", args, out, want)
			}
		}
	}
	for _, url := range []string{"http://" + forbiddenTarget(t) + "/", "http://192.0.2.1/", "http://example.com/"} {
		for _, mode := range [][]string{{"-x", proxyURL}, {"-p", "-x", proxyURL}} {
			args := append(mode, "--fail", url)
			if out, err := runCurl(t, args...); err == nil {
				t.Errorf("curl %v succeeded: %q", args, out)
			}
		}
	}
	checkOnlyMeshDialed(t, d)
}

func TestHTTPProxyStatuses(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	_, addr, d := startHTTP(t, m, nil)
	for _, tc := range []struct {
		method, target string
		want           int
	}{
		{"GET", "http://beta/x", http.StatusOK},
		{"GET", "http://10.42.0.2:80/x", http.StatusOK},
		{"CONNECT", "beta:80", http.StatusOK},
		{"CONNECT", "[fd42:42::2]:80", http.StatusOK},
		{"GET", "http://127.0.0.1:1/", http.StatusForbidden},
		{"GET", "http://192.0.2.1/", http.StatusForbidden},
		{"GET", "http://example.com/", http.StatusForbidden},
		{"CONNECT", "192.0.2.1:443", http.StatusForbidden},
		{"CONNECT", "example.com:443", http.StatusForbidden},
		{"GET", "http://delta.mesh/", http.StatusBadGateway},
		{"CONNECT", "delta:22", http.StatusBadGateway},
		{"CONNECT", "beta", http.StatusBadRequest},
		{"GET", "ftp://beta/", http.StatusBadRequest},
	} {
		resp := proxyGet(t, addr, tc.method, tc.target, http.Header{})
		if resp.StatusCode != tc.want {
			body, _ := io.ReadAll(resp.Body)
			t.Errorf("%s %s: %s %q, want %d", tc.method, tc.target, resp.Status, body, tc.want)
		}
	}
	checkOnlyMeshDialed(t, d)

	// An origin-form request is not a proxy request.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("origin-form GET: %s", resp.Status)
	}
}

func TestHTTPProxyAuth(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	creds := writeCredentials(t, "alice:s3cret\n")
	_, addr, d := startHTTP(t, m, creds)
	basic := func(user, pass string) http.Header {
		return http.Header{"Proxy-Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no credentials", http.Header{}, http.StatusProxyAuthRequired},
		{"wrong password", basic("alice", "nope"), http.StatusProxyAuthRequired},
		{"not basic", http.Header{"Proxy-Authorization": {"Bearer x"}}, http.StatusProxyAuthRequired},
		{"good", basic("alice", "s3cret"), http.StatusOK},
	} {
		for _, method := range []string{"GET", "CONNECT"} {
			target := "http://beta/"
			if method == "CONNECT" {
				target = "beta:80"
			}
			resp := proxyGet(t, addr, method, target, tc.header)
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: %s, want %d", tc.name, method, resp.Status, tc.want)
			}
			if tc.want == http.StatusProxyAuthRequired && resp.Header.Get("Proxy-Authenticate") != `Basic realm="wgmesh"` {
				t.Errorf("%s %s: Proxy-Authenticate %q", tc.name, method, resp.Header.Get("Proxy-Authenticate"))
			}
			if tc.want == http.StatusOK && method == "GET" {
				// beta answers 418 if Proxy-Authorization leaked.
				body, _ := io.ReadAll(resp.Body)
				if string(body) != "hello from beta: beta /" {
					t.Errorf("%s GET: body %q", tc.name, body)
				}
			}
		}
	}
	needCurl(t)
	proxyURL := "http://" + addr
	for _, mode := range [][]string{{"-x", proxyURL}, {"-p", "-x", proxyURL}} {
		args := append(mode, "--proxy-user", "alice:s3cret", "http://beta/")
		if out, err := runCurl(t, args...); err != nil || out != "hello from beta: beta /" {
			t.Errorf("curl %v: %v\n%s", args, err, out)
		}
		args = append(mode, "--fail", "--proxy-user", "alice:wrong", "http://beta/")
		if out, err := runCurl(t, args...); err == nil {
			t.Errorf("curl %v succeeded: %q", args, out)
		}
	}
	checkOnlyMeshDialed(t, d)
}

func TestHTTPConnectTunnelPassesEarlyBytes(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	_, addr, _ := startHTTP(t, m, nil)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// The tunnelled request follows the CONNECT in the same write, before
	// the proxy has answered.
	fmt.Fprintf(c, "CONNECT beta:80 HTTP/1.1\r\nHost: beta:80\r\n\r\nGET /early HTTP/1.0\r\nHost: beta\r\n\r\n")
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 200") || !strings.HasSuffix(string(got), "hello from beta: beta /early") {
		t.Errorf("got %q", got)
	}
}
