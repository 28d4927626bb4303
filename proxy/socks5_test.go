package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startSOCKS serves a SOCKS5 proxy into the mesh through alpha on
// 127.0.0.1.
func startSOCKS(t *testing.T, m *testMesh, auth *Credentials) (*SOCKS5, string, *recordingDialer) {
	t.Helper()
	d := &recordingDialer{d: m.alpha()}
	s := &SOCKS5{Dialer: d, Book: m.alpha().Book, Auth: auth}
	return s, serveSOCKS(t, s), d
}

// serveSOCKS serves s on 127.0.0.1 until the test ends and returns its
// address; Close must then end Serve, without an error.
func serveSOCKS(t *testing.T, s *SOCKS5) string {
	t.Helper()
	ln := listenLoopback(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return ln.Addr().String()
}

// checkOnlyMeshDialed fails if the proxy dialed anything but members.
func checkOnlyMeshDialed(t *testing.T, d *recordingDialer) {
	t.Helper()
	for _, a := range d.dialed() {
		if !strings.Contains(a, " 10.42.0.") && !strings.Contains(a, " [fd42:42::") {
			t.Errorf("proxy dialed %s, outside the mesh", a)
		}
	}
}

func TestSOCKS5CurlFetchesMemberByName(t *testing.T) {
	needCurl(t)
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	_, addr, d := startSOCKS(t, m, nil)
	for _, host := range []string{"beta", "beta.mesh", "BETA.Mesh"} {
		out, err := runCurl(t, "--socks5-hostname", addr, "http://"+host+"/page")
		if err != nil {
			t.Fatalf("curl --socks5-hostname %s http://%s/page: %v\n%s", addr, host, err, out)
		}
		if want := "hello from beta: " + host + " /page"; out != want {
			t.Errorf("http://%s/page: got %q, want %q", host, out, want)
		}
	}
	// A mesh address works as well, in both families.
	for _, host := range []string{"10.42.0.2", "[fd42:42::2]"} {
		out, err := runCurl(t, "--socks5-hostname", addr, "http://"+host+"/")
		if err != nil || !strings.HasPrefix(out, "hello from beta") {
			t.Errorf("curl http://%s/: %v\n%s", host, err, out)
		}
	}
	// Outside the mesh: refused, curl fails, nothing dialed.
	for _, url := range []string{"http://" + forbiddenTarget(t) + "/", "http://192.0.2.1/", "http://example.com/", "http://delta.mesh/"} {
		out, err := runCurl(t, "--socks5-hostname", addr, url)
		if err == nil {
			t.Errorf("curl %s through the proxy succeeded: %q", url, out)
		}
	}
	checkOnlyMeshDialed(t, d)
}

func TestSOCKS5RefusesBeforeDialing(t *testing.T) {
	m := newTestMesh(t)
	_, addr, d := startSOCKS(t, m, nil)
	cases := []struct {
		host string
		port uint16
		want byte
	}{
		{"127.0.0.1", 22, repNotAllowed},
		{"192.0.2.1", 80, repNotAllowed},
		{"2001:db8::1", 80, repNotAllowed},
		{"10.42.0.99", 80, repNotAllowed}, // in the mesh network, no member
		{"172.16.6.1", 80, repNotAllowed}, // next to beta's subnet
		{"example.com", 80, repNotAllowed},
		{"delta", 80, repHostUnreachable},
		{"delta.mesh", 80, repHostUnreachable},
		{"beta.other", 80, repNotAllowed},
	}
	for _, tc := range cases {
		c, _, err := dialSOCKS(t, addr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		rep, _, err := c.request(cmdConnect, tc.host, tc.port)
		if err != nil || rep != tc.want {
			t.Errorf("CONNECT %s:%d: reply %#x, %v; want %#x", tc.host, tc.port, rep, err, tc.want)
		}
	}
	if got := d.dialed(); len(got) != 0 {
		t.Errorf("refused requests dialed %v", got)
	}

	// Commands and address types the server does not support.
	c, _, err := dialSOCKS(t, addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if rep, _, err := c.request(cmdBind, "beta", 80); rep != repCommandUnsupported {
		t.Errorf("BIND: reply %#x, %v; want %#x", rep, err, repCommandUnsupported)
	}
	c, _, err = dialSOCKS(t, addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.conn.Write([]byte{5, cmdConnect, 0, 9, 1, 2, 3, 4, 0, 80})
	reply := make([]byte, 10)
	if _, err := c.conn.Read(reply); err != nil || reply[1] != repAddressUnsupported {
		t.Errorf("ATYP 9: reply %x, %v; want %#x", reply, err, repAddressUnsupported)
	}
}

func TestSOCKS5ConnectByNameAndAddress(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	_, addr, _ := startSOCKS(t, m, nil)
	for _, host := range []string{"beta", "Beta.MESH.", "10.42.0.2", "fd42:42::2"} {
		c, _, err := dialSOCKS(t, addr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		rep, bound, err := c.request(cmdConnect, host, 80)
		if err != nil || rep != repSucceeded {
			t.Fatalf("CONNECT %s:80: reply %#x, %v", host, rep, err)
		}
		// The bound address is alpha's end of the mesh connection.
		if a := bound.Addr(); a != netip.MustParseAddr("10.42.0.1") && a != netip.MustParseAddr("fd42:42::1") {
			t.Errorf("CONNECT %s: bound address %v, want one of alpha's", host, bound)
		}
		fmt.Fprintf(c.conn, "GET /x HTTP/1.0\r\nHost: beta\r\n\r\n")
		buf := make([]byte, 4096)
		var got []byte
		for {
			n, err := c.conn.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !strings.HasSuffix(string(got), "hello from beta: beta /x") {
			t.Errorf("CONNECT %s: got %q", host, got)
		}
	}
}

func writeCredentials(t *testing.T, content string) *Credentials {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socks.auth")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSOCKS5Auth(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaWeb(t)
	creds := writeCredentials(t, "# proxy users\nalice:s3cret:with:colons\nbob:hunter2\n")
	_, addr, d := startSOCKS(t, m, creds)

	// Hand-written client: wrong password → status 0x01 and the
	// connection closes; unknown user likewise.
	for _, up := range [][2]string{{"alice", "wrong"}, {"mallory", "hunter2"}, {"bob", "hunter"}} {
		_, status, err := dialSOCKS(t, addr, up[0], up[1])
		if err == nil || status != 0x01 {
			t.Errorf("user %s with a bad password: status %#x, %v; want 0x01", up[0], status, err)
		}
	}
	// No authentication offered → no acceptable method (0xff).
	if _, status, err := dialSOCKS(t, addr, "", ""); err == nil || status != methodNoAcceptable {
		t.Errorf("no-auth client against an auth server: method %#x, %v; want 0xff", status, err)
	}
	c, _, err := dialSOCKS(t, addr, "alice", "s3cret:with:colons")
	if err != nil {
		t.Fatalf("good credentials: %v", err)
	}
	if rep, _, err := c.request(cmdConnect, "beta", 80); rep != repSucceeded {
		t.Errorf("CONNECT after auth: reply %#x, %v", rep, err)
	}

	needCurl(t)
	out, err := runCurl(t, "--socks5-hostname", addr, "--proxy-user", "bob:hunter2", "http://beta/")
	if err != nil || out != "hello from beta: beta /" {
		t.Errorf("curl with good --proxy-user: %v\n%s", err, out)
	}
	out, err = runCurl(t, "-x", "socks5h://alice:s3cret:with:colons@"+addr, "http://beta.mesh/")
	if err != nil || out != "hello from beta: beta.mesh /" {
		t.Errorf("curl with good credentials in the proxy URL: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"--socks5-hostname", addr, "--proxy-user", "bob:wrong", "http://beta/"},
		{"--socks5-hostname", addr, "http://beta/"},
	} {
		if out, err := runCurl(t, args...); err == nil {
			t.Errorf("curl %v succeeded: %q", args, out)
		}
	}
	checkOnlyMeshDialed(t, d)
}

func TestSOCKS5HandshakeTimeout(t *testing.T) {
	old := handshakeTimeout
	handshakeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { handshakeTimeout = old })
	s := &SOCKS5{Dialer: &recordingDialer{}, Book: staticBook(unitBook())}
	ln := listenLoopback(t)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	for _, greeting := range [][]byte{nil, {5, 1}} { // silent; half a greeting
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(greeting)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); err == nil || time.Since(start) > 4*time.Second {
			t.Errorf("silent client after %v: %v; want the server to hang up", time.Since(start), err)
		}
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr string
		auth bool
		ok   bool
	}{
		{"127.0.0.1:1080", false, true},
		{"127.0.0.2:1080", false, true},
		{"[::1]:1080", false, true},
		{"localhost:1080", false, true},
		{"0.0.0.0:1080", false, false},
		{"[::]:1080", false, false},
		{":1080", false, false},
		{"192.168.1.10:1080", false, false},
		{"0.0.0.0:1080", true, true},
		{"[::]:1080", true, true},
		{"1080", false, false},
	} {
		err := CheckListen(tc.addr, tc.auth)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, %v) = %v, want ok=%v", tc.addr, tc.auth, err, tc.ok)
		}
	}
	err := CheckListen("0.0.0.0:1080", false)
	want := "--socks 0.0.0.0:1080 without --socks-auth-file would let anyone on the network into the mesh; bind 127.0.0.1 or set --socks-auth-file"
	if err == nil || err.Error() != want {
		t.Errorf("CheckListen message:\n got %v\nwant %s", err, want)
	}
	err = CheckListenFlag("--http-proxy", "--http-proxy-auth-file", "[::]:8080", false)
	if err == nil || !strings.HasPrefix(err.Error(), "--http-proxy [::]:8080 without --http-proxy-auth-file") {
		t.Errorf("CheckListenFlag message: %v", err)
	}
}
