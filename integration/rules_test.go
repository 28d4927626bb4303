package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// serveHTTP answers every request in ns on addr with "NAME\n".
func serveHTTP(t *testing.T, ns *netNS, addr, name string) {
	serveHandler(t, ns, addr, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, name) })
}

// serveHandler serves HTTP with h in ns on addr until the test ends.
func serveHandler(t *testing.T, ns *netNS, addr string, h http.HandlerFunc) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// curlFrom fetches url from ns within timeout; "" when it fails.
func curlFrom(ns *netNS, url string, timeout time.Duration) string {
	return curlWith(ns, timeout, url)
}

// curlWith runs curl in ns with args within timeout and returns what it
// printed, trimmed; "" when it fails.
func curlWith(ns *netNS, timeout time.Duration, args ...string) string {
	out, err := ns.Try(append([]string{"curl", "-sS", "--max-time", fmt.Sprint(timeout.Seconds())}, args...)...)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// pings reports whether dst answers a ping from ns (2 tries, 1 s each).
func pings(ns *netNS, dst string) bool {
	_, err := ns.Try("ping", "-c", "2", "-W", "1", dst)
	return err == nil
}

// dialsWithin reports whether a TCP connection from ns to addr opens
// within d.
func dialsWithin(ns *netNS, addr string, d time.Duration) bool {
	var err error
	ns.Do(func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, d); err == nil {
			c.Close()
		}
	})
	return err == nil
}

// TestTUNRules: three members in TUN mode, each in its namespace: srv (a
// server that also routes the LAN 192.168.77.0/24, with a host on it),
// laptop (staff) and ci. The book's rules let staff ping and reach srv's
// port 7000 (and, by naming srv, its LAN too), and ci reach srv's web
// port and the LAN host's. Real ping, curl and TCP clients find exactly
// that open; srv's status counts the rest.
func TestTUNRules(t *testing.T) {
	needRoot(t, "ip", "ping", "curl", "nft")
	dir := t.TempDir()
	ms := newMembers(t, dir, "srv", "laptop", "ci")
	srv, laptop, ci := ms[0], ms[1], ms[2]
	host := lanHost(t, srv.NS, "lan0", "lanhost", 77, true)
	b := meshBook(ms)
	b.Peers[0].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
	b.Peers[0].Groups = []string{"servers"}
	b.Peers[1].Groups = []string{"staff"}
	rules := `
[[rule]]
from = ["group:staff"]
to = ["group:servers"]
ports = ["tcp:7000", "icmp"]

[[rule]]
from = ["ci"]
to = ["srv"]
ports = ["tcp:8080"]

[[rule]]
from = ["ci"]
to = ["subnet:192.168.77.0/24"]
ports = ["tcp:80"]
`
	book := filepath.Join(dir, "book.toml")
	if err := os.WriteFile(book, append(peerbook.Marshal(b), rules...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := peerbook.Load(book); err != nil {
		t.Fatalf("generated book is invalid: %v", err)
	}
	for _, m := range ms {
		m.start(t, book, "--mode", "tun", "--interface", m.IfName)
	}
	srvAddr, srvAddr6 := meshAddr4(0).String(), meshAddr6(0).String()
	serveEcho(t, srv.NS, netip.AddrPortFrom(meshAddr4(0), 7000), "srv")
	serveHTTP(t, srv.NS, srvAddr+":8080", "srv web")
	serveHTTP(t, host, "192.168.77.2:80", "lan web")

	// Allowed, and the replies pass at members no rule opens.
	waitPing(t, laptop.NS, meshAddr4(0))
	waitPing(t, laptop.NS, meshAddr6(0))
	if got := dialEcho(t, laptop.NS, netip.AddrPortFrom(meshAddr4(0), 7000)); got != "srv saw 10.42.0.2" {
		t.Errorf("laptop -> srv:7000: %q", got)
	}
	if got := curlFrom(ci.NS, "http://"+srvAddr+":8080/", 10*time.Second); got != "srv web" {
		t.Errorf("ci -> srv:8080: %q", got)
	}
	if got := curlFrom(ci.NS, "http://192.168.77.2/", 10*time.Second); got != "lan web" {
		t.Errorf("ci -> lan host:80 through srv: %q", got)
	}
	if !pings(laptop.NS, "192.168.77.2") {
		t.Error("laptop cannot ping the LAN host: a rule to srv opens its subnets")
	}

	// Denied. The checks wait for answers that do not come: run them
	// side by side.
	denied := map[string]func() bool{
		"ci pings srv":           func() bool { return pings(ci.NS, srvAddr) },
		"ci pings srv over IPv6": func() bool { return pings(ci.NS, srvAddr6) },
		"ci pings the LAN host":  func() bool { return pings(ci.NS, "192.168.77.2") },
		"srv pings laptop (the reverse of an allowed flow)": func() bool { return pings(srv.NS, meshAddr4(1).String()) },
		"laptop pings ci":             func() bool { return pings(laptop.NS, meshAddr4(2).String()) },
		"ci reaches srv:7000":         func() bool { return dialsWithin(ci.NS, srvAddr+":7000", 2*time.Second) },
		"laptop fetches srv:8080":     func() bool { return curlFrom(laptop.NS, "http://"+srvAddr+":8080/", 2*time.Second) != "" },
		"laptop fetches the LAN host": func() bool { return curlFrom(laptop.NS, "http://192.168.77.2/", 2*time.Second) != "" },
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for what, check := range denied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if check() {
				mu.Lock()
				t.Errorf("%s: passed, want dropped by the rules", what)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	st, err := srv.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Rules != 3 {
		t.Errorf("srv's status: %d rules, want 3", st.Rules)
	}
	for _, p := range st.Peers {
		// laptop's fetch of srv:8080, ci's pings and connection.
		if p.Dropped == 0 || p.DroppedBy["no-rule"] != p.Dropped {
			t.Errorf("srv's drops from %s: %d (%v)", p.Name, p.Dropped, p.DroppedBy)
		}
	}
	if d := peerDrops(st, "ci"); d < 3 {
		t.Errorf("srv counts %d drops from ci, want at least 3 (pings, TCP)", d)
	}
}

func peerDrops(st node.Status, name string) uint64 {
	for _, p := range st.Peers {
		if p.Name == name {
			return p.Dropped
		}
	}
	return 0
}

// TestRulesRootlessSubnetRouter: beta runs as nobody in netstack mode and
// routes the LAN 192.168.78.0/24 through host sockets; alpha (TUN mode)
// may open only tcp:80 on that LAN. Real curl from alpha reaches the LAN
// host's port 80, not its port 81, and a ping of beta's mesh address (the
// netstack answers echo requests) is dropped too.
func TestRulesRootlessSubnetRouter(t *testing.T) {
	needRoot(t, "ip", "ping", "curl", "setpriv")
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	os.Chown(dir, 65534, 65534)
	ms := newMembers(t, dir, "alpha", "beta")
	alpha, beta := ms[0], ms[1]
	for _, m := range ms {
		os.Chown(m.KeyFile, 65534, 65534)
	}
	host := lanHost(t, beta.NS, "lan0", "lanhost", 78, false)
	serveHTTP(t, host, "192.168.78.2:80", "lan web")
	serveHTTP(t, host, "192.168.78.2:81", "lan admin")
	b := meshBook(ms)
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.78.0/24")}
	book := filepath.Join(dir, "book.toml")
	rules := "\n[[rule]]\nfrom = [\"alpha\"]\nto = [\"subnet:192.168.78.0/24\"]\nports = [\"tcp:80\"]\n"
	if err := os.WriteFile(book, append(peerbook.Marshal(b), rules...), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(book, 65534, 65534)
	// alpha runs as root: its socket directory must be root's.
	alpha.Control = filepath.Join(t.TempDir(), "alpha.sock")
	alpha.start(t, book, "--mode", "tun", "--interface", alpha.IfName)
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	beta.startAs(t, nobody, book, "--mode", "netstack")

	got := ""
	for deadline := time.Now().Add(20 * time.Second); got == "" && time.Now().Before(deadline); {
		got = curlFrom(alpha.NS, "http://192.168.78.2/", 5*time.Second)
	}
	if got != "lan web" {
		t.Fatalf("alpha -> LAN host:80 through the rootless router: %q", got)
	}
	if got := curlFrom(alpha.NS, "http://192.168.78.2:81/", 2*time.Second); got != "" {
		t.Errorf("alpha -> LAN host:81 passed (%q), want dropped by the rules", got)
	}
	if pings(alpha.NS, meshAddr4(1).String()) {
		t.Error("alpha pings beta, want dropped by the rules")
	}
	st, err := beta.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Rules != 1 || peerDrops(st, "alpha") == 0 {
		t.Errorf("beta's status: rules %d, drops from alpha %d", st.Rules, peerDrops(st, "alpha"))
	}
}
