package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// scriptConn is a client connection that sends a fixed byte string and
// records what the server writes back.
type scriptConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *scriptConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1080}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// encodeCanonicalAddr is ATYP ADDR PORT for host as readAddr returns it: an IP in
// its canonical text as an address, anything else as a domain.
func encodeCanonicalAddr(host string, port uint16) []byte {
	var b []byte
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" && ip.String() == host {
		if ip.Is4() {
			b = append(b, atypIPv4)
		} else {
			b = append(b, atypIPv6)
		}
		b = append(b, ip.AsSlice()...)
	} else {
		b = append(b, atypDomain, byte(len(host)))
		b = append(b, host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

var fuzzUser, fuzzPass = "alice", "s3cret"

func fuzzCredentials(t testing.TB) *Credentials {
	c, err := NewCredentials(map[string]string{fuzzUser: fuzzPass})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzSOCKS5Handshake: the greeting, RFC 1929 authentication and request
// of a client never make the server panic; with authentication on, only
// the right user and password get past negotiate; a request it accepts is
// CONNECT or UDP ASSOCIATE and reads back the same when encoded again.
func FuzzSOCKS5Handshake(f *testing.F) {
	req := append([]byte{socksVersion, cmdConnect, 0}, encodeCanonicalAddr("alpha", 80)...)
	auth := append([]byte{userPassVersion, byte(len(fuzzUser))}, fuzzUser...)
	auth = append(append(auth, byte(len(fuzzPass))), fuzzPass...)
	f.Add(append([]byte{5, 1, methodNoAuth}, req...), false)
	f.Add(append(append([]byte{5, 2, methodNoAuth, methodUserPass}, auth...), req...), true)
	f.Add(append([]byte{5, 1, methodNoAuth}, append([]byte{socksVersion, cmdUDPAssociate, 0}, encodeCanonicalAddr("0.0.0.0", 0)...)...), false)
	f.Add(append([]byte{5, 1, methodNoAuth}, append([]byte{socksVersion, cmdBind, 0}, encodeCanonicalAddr("fd42:42::2", 22)...)...), false)
	f.Add([]byte{5, 1, methodUserPass, 1, 5, 'a', 'l', 'i', 'c', 'e', 1, 'x'}, true)
	f.Add([]byte{4, 1, 0, 80, 10, 42, 0, 1, 0}, false)
	creds := fuzzCredentials(f)

	f.Fuzz(func(t *testing.T, data []byte, withAuth bool) {
		s := &SOCKS5{Dialer: &recordingDialer{}, Book: staticBook(unitBook())}
		if withAuth {
			s.Auth = creds
		}
		c := &scriptConn{r: bytes.NewReader(data)}
		user, err := s.negotiate(c)
		out := c.w.Bytes()
		if len(out) > 0 && (len(out) < 2 || out[0] != socksVersion) {
			t.Fatalf("method reply % x", out)
		}
		if err != nil {
			return
		}
		if withAuth {
			good := append([]byte{userPassVersion, byte(len(fuzzUser))}, fuzzUser...)
			good = append(append(good, byte(len(fuzzPass))), fuzzPass...)
			if user != fuzzUser || !bytes.Contains(data, good) {
				t.Fatalf("authenticated as %q without the password", user)
			}
		} else if user != "" {
			t.Fatalf("user %q without authentication", user)
		}
		cmd, host, port, err := readRequest(c)
		if err != nil {
			return
		}
		if cmd != cmdConnect && cmd != cmdUDPAssociate {
			t.Fatalf("command %d accepted", cmd)
		}
		again := append([]byte{socksVersion, cmd, 0}, encodeCanonicalAddr(host, port)...)
		cmd2, host2, port2, err := readRequest(&scriptConn{r: bytes.NewReader(again)})
		if err != nil || cmd2 != cmd || host2 != host || port2 != port {
			t.Fatalf("request %d %q:%d encoded again reads %d %q:%d, %v", cmd, host, port, cmd2, host2, port2, err)
		}
	})
}

// FuzzSOCKS5UDPHeader: a UDP ASSOCIATE datagram's header never makes the
// parser panic; what it accepts encodes back to the same destination and
// payload, and the payload is the datagram's tail.
func FuzzSOCKS5UDPHeader(f *testing.F) {
	f.Add(append(append([]byte{0, 0, 0}, encodeCanonicalAddr("10.42.0.2", 53)...), "query"...))
	f.Add(append(append([]byte{0, 0, 0}, encodeCanonicalAddr("fd42:42::2", 7)...), "x"...))
	f.Add(append([]byte{0, 0, 0}, encodeCanonicalAddr("beta.corp.mesh", 9)...))
	f.Add(append(append([]byte{0, 0, 1}, encodeCanonicalAddr("10.42.0.2", 53)...), "frag"...))
	f.Add([]byte{0, 0, 0, atypDomain, 200, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		host, port, payload, err := parseUDPRequest(b)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(b, payload) {
			t.Fatal("payload is not the datagram's tail")
		}
		again := append(append([]byte{0, 0, 0}, encodeCanonicalAddr(host, port)...), payload...)
		host2, port2, payload2, err := parseUDPRequest(again)
		if err != nil || host2 != host || port2 != port || !bytes.Equal(payload2, payload) {
			t.Fatalf("%q:%d encoded again reads %q:%d, %v", host, port, host2, port2, err)
		}
	})
}

// FuzzHTTPTarget: a CONNECT target or request host never makes the proxy's
// parsing panic; what splitHostPort accepts joins and splits back the same;
// destination resolves only to addresses the rules allow, and refuses with
// a *refusal otherwise.
func FuzzHTTPTarget(f *testing.F) {
	for _, s := range []string{"alpha:80", "beta.corp.mesh:443", "[fd42:42::2]:22", "10.42.0.1:0", "192.168.7.9:8080",
		"[::ffff:10.42.0.1]:80", "[fe80::1%eth0]:80", "203.0.113.9:1", "example.com:443", "alpha", ":80", "[beta]:80"} {
		f.Add(s)
	}
	book := unitBook()
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	f.Fuzz(func(t *testing.T, hostport string) {
		host, port, err := splitHostPort(hostport, 0)
		if err != nil {
			return
		}
		if port == 0 {
			t.Fatal("port 0 accepted")
		}
		h2, p2, err := splitHostPort(net.JoinHostPort(host, strconv.Itoa(int(port))), 0)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("%q: split %q %d, joined and split again %q %d, %v", hostport, host, port, h2, p2, err)
		}
		dst, err := destination(book, allow, host, port)
		if err != nil {
			var ref *refusal
			if !errors.As(err, &ref) {
				t.Fatalf("error %T: %v", err, err)
			}
			return
		}
		a := dst.Addr()
		if dst.Port() != port || a.Zone() != "" || a.Is4In6() || !inRules(book, allow, a) {
			t.Fatalf("%q resolved to %v, outside the rules", hostport, dst)
		}
	})
}

// dialLog records the addresses the proxy dials and fails every dial.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) Dial(_ context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	return nil, errors.New("fuzz: no network")
}

// hijackRecorder lets CONNECT get as far as the dial.
type hijackRecorder struct{ *httptest.ResponseRecorder }

func (hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("fuzz: no hijack")
}

// FuzzHTTPProxyRequest: whatever request a client sends, the HTTP proxy
// dials only destinations the rules allow, and with authentication on only
// for a Proxy-Authorization that carries the right user and password.
func FuzzHTTPProxyRequest(f *testing.F) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(fuzzUser+":"+fuzzPass))
	for _, s := range []string{
		"CONNECT beta:22 HTTP/1.1\r\nHost: beta:22\r\nProxy-Authorization: " + basic + "\r\n\r\n",
		"GET http://alpha/x HTTP/1.1\r\nHost: alpha\r\nProxy-Authorization: " + basic + "\r\n\r\n",
		"GET http://192.168.7.9:8080/ HTTP/1.1\r\nHost: other\r\nProxy-Authorization: basic " + base64.StdEncoding.EncodeToString([]byte(fuzzUser+":x")) + "\r\n\r\n",
		"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: " + basic + "\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: alpha\r\n\r\n",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	book := unitBook()
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	creds := fuzzCredentials(f)

	f.Fuzz(func(t *testing.T, raw []byte, withAuth bool) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		r.RemoteAddr = "127.0.0.1:40000"
		d := &dialLog{}
		h := &HTTP{Dialer: d, Book: staticBook(book), Allow: allow}
		if withAuth {
			h.Auth = creds
		}
		h.ServeHTTP(hijackRecorder{httptest.NewRecorder()}, r)
		h.Close()
		if len(d.addrs) == 0 {
			return
		}
		if withAuth {
			v := r.Header.Get("Proxy-Authorization")
			scheme, cred, _ := strings.Cut(v, " ")
			got, _ := base64.StdEncoding.DecodeString(cred)
			if !strings.EqualFold(scheme, "Basic") || string(got) != fuzzUser+":"+fuzzPass {
				t.Fatalf("dialed %v with Proxy-Authorization %q", d.addrs, v)
			}
		}
		for _, a := range d.addrs {
			ap, err := netip.ParseAddrPort(a)
			if err != nil || !inRules(book, allow, ap.Addr()) {
				t.Fatalf("dialed %q, outside the rules", a)
			}
		}
	})
}

// inRules is the destination rule written out again, independently of
// allowed: a member's address, an address in a member's subnet, or in allow.
func inRules(book *peerbook.Book, allow []netip.Prefix, a netip.Addr) bool {
	var ok []netip.Prefix
	for _, p := range book.Peers {
		for _, x := range p.Addresses {
			ok = append(ok, netip.PrefixFrom(x, x.BitLen()))
		}
		ok = append(ok, p.Subnets...)
	}
	return slices.ContainsFunc(append(ok, allow...), func(p netip.Prefix) bool { return p.Contains(a) })
}
