package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
)

// End-to-end test of the services `wgmesh up` offers besides forwards:
// endpoint hostnames resolved through --resolver, the SOCKS5 and HTTP
// proxies driven by the real curl, DNS for member names on the host and
// on the mesh, and Prometheus metrics checked against `wgmesh status`.

// readyAttr waits, at most 20 seconds, for p's ready line and returns the
// value of key in it.
func (p *proc) readyAttr(t *testing.T, key string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=ready .*\b` + regexp.QuoteMeta(key) + `=(\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: no %s in a ready line", p.name, key)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testDNS serves A records for names on 127.0.0.1, as a DDNS provider
// would; it answers every other question with NXDOMAIN.
func testDNS(t *testing.T, names map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		ip, ok := names[strings.ToLower(q.Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A:   net.ParseIP(ip),
			})
		}
		w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().String()
}

// lookup asks the DNS server at addr for name's records of type qtype.
func lookup(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	var err error
	for try := 0; try < 5; try++ { // a datagram may be lost
		var r *dns.Msg
		if r, _, err = c.Exchange(m, addr); err == nil {
			return r
		}
	}
	t.Fatalf("DNS %s %s to %s: %v", dns.TypeToString[qtype], name, addr, err)
	return nil
}

// curl runs the real curl with a bounded time and returns its output.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	path := testutil.Tool(t, "curl", "curl")
	out, err := exec.Command(path, append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// scrape fetches url and returns the value of every sample, keyed by the
// metric name with its labels as written, e.g.
// `wgmesh_peer_receive_bytes_total{peer="beta"}`.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("%s: unparsable sample %q", url, line)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

func peerStatus(st node.Status, name string) node.PeerStatus {
	for _, p := range st.Peers {
		if p.Name == name {
			return p
		}
	}
	return node.PeerStatus{}
}

func TestEndToEndServices(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	bookPath := filepath.Join(dir, "book.toml")
	ms := newMembers(t, dir, "alpha", "beta")
	writeBook(t, bookPath, 1, ms)

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from beta, %s %s\n", r.Method, r.URL.Path)
	}))
	defer page.Close()
	resolver := testDNS(t, map[string]string{"beta.test.": "127.0.0.1"})

	users := filepath.Join(dir, "proxy-users")
	if err := os.WriteFile(users, []byte("# proxy users\nalice:s3cret-Pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := func(name string) string { return filepath.Join(dir, "run", name, "wgmesh.sock") }
	beta := startUp(t, bin, "beta", ctl("beta"), "--book", bookPath, "--key", ms[1].keyPath, "--listen-port", "0",
		"--expose", "tcp:80="+page.Listener.Addr().String(),
		"--forward", "udp:127.0.0.1:0=alpha:53")
	meshDNSForward := boundForward(t, beta, "udp", "alpha:53")
	alpha := startUp(t, bin, "alpha", ctl("alpha"), "--book", bookPath, "--key", ms[0].keyPath, "--listen-port", "0",
		"--resolver", resolver, "--resolve-interval", "1s",
		"--socks", "127.0.0.1:0", "--http-proxy", "127.0.0.1:0", "--socks-auth-file", users,
		"--dns", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
	socks, httpProxy := alpha.readyAttr(t, "socks"), alpha.readyAttr(t, "http_proxy")
	dnsAddr, metricsAddr := alpha.readyAttr(t, "dns"), alpha.readyAttr(t, "metrics")
	if got := alpha.readyAttr(t, "mesh_dns"); got != "10.42.0.1:53,[fd42:42::1]:53" {
		t.Errorf("alpha serves DNS in the mesh on %s, want both its mesh addresses", got)
	}

	// beta is known to alpha only by a DNS name: alpha has no endpoint, so
	// beta cannot reach it first, and the tunnel comes up only if alpha
	// resolves beta.test through --resolver.
	st := beta.waitStatus(t, bin, "start-up", func(st node.Status) bool { return st.ListenPort != 0 })
	ms[1].port, ms[1].host = st.ListenPort, "beta.test"
	writeBook(t, bookPath, 2, ms)
	betaEndpoint := "127.0.0.1:" + strconv.Itoa(int(st.ListenPort))

	t.Run("DDNS endpoint through --resolver", func(t *testing.T) {
		alpha.waitStatus(t, bin, "beta's endpoint resolved", func(st node.Status) bool {
			return st.BookSerial == 2 && peerStatus(st, "beta").Endpoint == betaEndpoint
		})
	})

	t.Run("curl through SOCKS5", func(t *testing.T) {
		if got := curl(t, "--socks5-hostname", socks, "--proxy-user", "alice:s3cret-Pass", "http://beta/socks"); got != "hello from beta, GET /socks\n" {
			t.Errorf("got %q", got)
		}
		if got := curl(t, "-x", "socks5h://alice:s3cret-Pass@"+socks, "http://beta.mesh/"); !strings.HasPrefix(got, "hello from beta") {
			t.Errorf("beta.mesh: got %q", got)
		}
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--socks5-hostname", socks, "--proxy-user", "alice:wrong", "http://beta/").CombinedOutput()
		if err == nil {
			t.Errorf("curl with a wrong password got through: %s", out)
		}
	})

	t.Run("curl through the HTTP proxy", func(t *testing.T) {
		proxyURL := "http://alice:s3cret-Pass@" + httpProxy
		if got := curl(t, "-x", proxyURL, "http://beta.mesh/plain"); got != "hello from beta, GET /plain\n" {
			t.Errorf("absolute-form GET: got %q", got)
		}
		if got := curl(t, "-p", "-x", proxyURL, "http://beta/tunnel"); got != "hello from beta, GET /tunnel\n" {
			t.Errorf("CONNECT: got %q", got)
		}
		if code := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+httpProxy, "http://beta/"); code != "407" {
			t.Errorf("without credentials: status %s, want 407", code)
		}
		// Outside the mesh: refused with 403 before any dial.
		code := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", proxyURL, "http://"+page.Listener.Addr().String()+"/")
		if code != "403" {
			t.Errorf("a host outside the mesh through the HTTP proxy: status %s, want 403", code)
		}
	})

	t.Run("DNS for member names", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			r := lookup(t, network, dnsAddr, "beta.mesh", dns.TypeA)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.42.0.2" {
				t.Errorf("%s: beta.mesh A: %v", network, r.Answer)
			}
		}
		if r := lookup(t, "udp", dnsAddr, "beta.mesh", dns.TypeAAAA); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fd42:42::2" {
			t.Errorf("beta.mesh AAAA: %v", r.Answer)
		}
		if r := lookup(t, "udp", dnsAddr, "delta.mesh", dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Errorf("delta.mesh: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		// From beta through the mesh to alpha's port 53.
		r := lookup(t, "udp", meshDNSForward, "alpha.mesh", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.42.0.1" {
			t.Errorf("alpha.mesh A asked of alpha through the mesh: %v", r.Answer)
		}
	})

	t.Run("metrics match status", func(t *testing.T) {
		before, err := alpha.status(t, bin)
		if err != nil {
			t.Fatal(err)
		}
		m := scrape(t, "http://"+metricsAddr+"/metrics")
		after, err := alpha.status(t, bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			metric        string
			before, after uint64
		}{
			{`wgmesh_peer_receive_bytes_total{peer="beta"}`, peerStatus(before, "beta").RxBytes, peerStatus(after, "beta").RxBytes},
			{`wgmesh_peer_transmit_bytes_total{peer="beta"}`, peerStatus(before, "beta").TxBytes, peerStatus(after, "beta").TxBytes},
			{`wgmesh_peer_endpoint_changes_total{peer="beta"}`, peerStatus(before, "beta").EndpointChanges, peerStatus(after, "beta").EndpointChanges},
			{`wgmesh_book_serial`, before.BookSerial, after.BookSerial},
		} {
			v, ok := m[c.metric]
			if !ok {
				t.Errorf("no %s in the scrape", c.metric)
				continue
			}
			if v < float64(c.before) || v > float64(c.after) {
				t.Errorf("%s = %v, status says %d before the scrape and %d after", c.metric, v, c.before, c.after)
			}
		}
		if m[`wgmesh_peer_receive_bytes_total{peer="beta"}`] == 0 {
			t.Error("no traffic from beta counted, after the proxies fetched pages from it")
		}
		hs := peerStatus(after, "beta").LastHandshake
		if age, ok := m[`wgmesh_peer_handshake_age_seconds{peer="beta"}`]; !ok || hs.IsZero() || age < 0 || age > time.Since(hs).Seconds()+1 {
			t.Errorf("handshake age %v (present %v), status handshake %v", age, ok, hs)
		}
		if m[`wgmesh_book_reloads_total{result="applied"}`] < 1 {
			t.Errorf("reloads applied = %v, want at least the reload to serial 2", m[`wgmesh_book_reloads_total{result="applied"}`])
		}
		if _, ok := m[`wgmesh_book_reloads_total{result="rejected"}`]; !ok {
			t.Error("no rejected reloads series")
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get("http://" + metricsAddr + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %s", path, resp.Status)
			}
		}
	})

	t.Run("SIGTERM stops every service", func(t *testing.T) {
		stopProc(t, alpha)
		for _, addr := range []string{socks, httpProxy, dnsAddr, metricsAddr} {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after alpha stopped", addr)
			}
		}
	})
}
