package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// serveClientAddr serves HTTP on addr in ns, answering with the address
// the request came from.
func serveClientAddr(t *testing.T, ns *netNS, addr string) {
	t.Helper()
	serveHandler(t, ns, addr, func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	})
}

// curlSocks fetches url from ns through the SOCKS5 proxy at proxy, the
// proxy resolving the name (--socks5-hostname); "" when it fails.
func curlSocks(ns *netNS, proxy, url string, timeout time.Duration) string {
	return curlWith(ns, timeout, "--socks5-hostname", proxy, url)
}

// eventually retries f, 0.3 s apart, until it returns want or d passes.
func eventually(d time.Duration, want string, f func() string) string {
	got := ""
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if got = f(); got == want {
			break
		}
	}
	return got
}

// TestExitNodeNetstack: "web" is a host only the exit member's namespace
// reaches; it answers with the address it sees. The exit member runs in
// netstack mode as user nobody (no root anywhere), the client in netstack
// mode with --socks and --exit-node exit.
//
//   - curl --socks5-hostname through the client reaches web, which sees
//     the exit member's address; a service on the exit member's own host
//     address is refused, its mesh service (--expose) still answers;
//   - rules that open the whole mesh but not exit:exit block the client's
//     use of the exit while mesh traffic flows; a rule with exit:exit
//     opens it again;
//   - a reload that removes exit = true fails closed;
//   - the exit member in TUN mode (root) serves the netstack client too,
//     enforces exit:exit the same way, and stops forwarding when its own
//     book drops exit = true while the client still sends.
func TestExitNodeNetstack(t *testing.T) {
	needRoot(t, "ip", "nft", "curl", "setpriv")
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	os.Chown(dir, 65534, 65534)
	underlay := newLAN(t, "198.18.112.0/24")
	outside := newLAN(t, "203.0.113.0/24")
	exitNS, clientNS, webNS := newNS(t, "nexit"), newNS(t, "nclient"), newNS(t, "nweb")
	exit := newMember(t, dir, "exit", exitNS)
	client := newMember(t, dir, "client", clientNS)
	// client runs as root: its socket directory must be root's.
	client.Control = filepath.Join(t.TempDir(), "client.sock")
	os.Chown(exit.KeyFile, 65534, 65534)
	exit.Underlay = underlay.attach(exitNS, "eth0")
	client.Underlay = underlay.attach(clientNS, "eth0")
	exitOut := outside.attach(exitNS, "eth1")
	webAddr := outside.attach(webNS, "eth0")
	webNS.Run("ip", "route", "add", "default", "via", exitOut.String())
	serveClientAddr(t, webNS, netip.AddrPortFrom(webAddr, 80).String())
	// Services of the exit member's host: on its outside address and its
	// loopback (the latter published to the mesh with --expose).
	serveHTTP(t, exitNS, netip.AddrPortFrom(exitOut, 8080).String(), "exit host")
	serveHTTP(t, exitNS, "127.0.0.1:8080", "exit loopback")
	if out, err := clientNS.Try("ip", "route", "get", webAddr.String()); err == nil {
		t.Fatalf("client reaches web without the mesh: %s", out)
	}

	b := meshBook([]*member{exit, client})
	b.Peers[0].Exit = true
	path := writeBook(t, dir, b)
	os.Chown(path, 65534, 65534)
	// publish writes the book (with rules appended, edited) to paths, by
	// default the shared one; the members watch their files.
	publish := func(rules string, edit func(*peerbook.Book), paths ...string) {
		t.Helper()
		if len(paths) == 0 {
			paths = []string{path}
		}
		nb := *b
		nb.Peers = append([]peerbook.Peer(nil), b.Peers...)
		nb.Serial++
		b.Serial++
		if edit != nil {
			edit(&nb)
		}
		for _, p := range paths {
			if err := os.WriteFile(p, append(peerbook.Marshal(&nb), rules...), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := peerbook.Load(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	exit.startAs(t, nobody, path, "--mode", "netstack", "--expose", "tcp:80=127.0.0.1:8080")
	const proxy = "127.0.0.1:1080"
	client.start(t, path, "--mode", "netstack", "--socks", proxy, "--exit-node", "exit")
	web := "http://" + webAddr.String() + "/"

	// (a) Through the rootless exit member.
	if got := eventually(20*time.Second, exitOut.String(), func() string { return curlSocks(clientNS, proxy, web, 3*time.Second) }); got != exitOut.String() {
		t.Fatalf("web through the netstack exit member saw %q, want the exit member's address %s", got, exitOut)
	}
	t.Logf("web saw the exit member's address %s", exitOut)
	if got := curlSocks(clientNS, proxy, "http://"+exitOut.String()+":8080/", 3*time.Second); got != "" {
		t.Errorf("the exit member forwarded to its own host address: %q", got)
	}
	if got := curlSocks(clientNS, proxy, "http://exit/", 5*time.Second); got != "exit loopback" {
		t.Errorf("the exit member's mesh service: %q", got)
	}

	// (d) Rules: the whole mesh, but not the exit.
	everyone := "\n[[rule]]\nfrom = [\"*\"]\nto = [\"*\"]\nports = [\"any\"]\n"
	publish(everyone, nil)
	if got := eventually(10*time.Second, "", func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != "" {
		t.Errorf("rules without exit:exit: web still reached (%q)", got)
	}
	if got := curlSocks(clientNS, proxy, "http://exit/", 5*time.Second); got != "exit loopback" {
		t.Errorf("mesh traffic under rules without exit:exit: %q", got)
	}
	publish(everyone+"\n[[rule]]\nfrom = [\"client\"]\nto = [\"exit:exit\"]\nports = [\"tcp:80\"]\n", nil)
	if got := eventually(10*time.Second, exitOut.String(), func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != exitOut.String() {
		t.Errorf("with a rule to exit:exit: %q", got)
	}

	// (c) Fail closed: exit = true goes.
	publish("", func(nb *peerbook.Book) { nb.Peers[0].Exit = false })
	if got := eventually(10*time.Second, "", func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != "" {
		t.Errorf("web still reached after exit = true was removed: %q", got)
	}
	// Refused by the proxy (SOCKS5 reply 2, not allowed), not timed out.
	out, _ := clientNS.Try("curl", "-sS", "--max-time", "3", "--socks5-hostname", proxy, web)
	if !strings.Contains(out, "SOCKS5 connection to "+webAddr.String()+". (2)") {
		t.Errorf("curl after exit = true went: %s", out)
	}

	// (b) The exit member in TUN mode, the client still in netstack mode.
	if err := exit.stop(); err != nil {
		t.Fatal(err)
	}
	// From here the exit member reads a book of its own.
	exitPath := filepath.Join(t.TempDir(), "book.toml")
	publish("", nil, path, exitPath) // exit = true again
	exit.Control = filepath.Join(t.TempDir(), "exit.sock")
	exit.start(t, exitPath, "--mode", "tun", "--interface", exit.IfName)
	if got := eventually(20*time.Second, exitOut.String(), func() string { return curlSocks(clientNS, proxy, web, 3*time.Second) }); got != exitOut.String() {
		t.Errorf("web through the TUN exit member saw %q, want %s", got, exitOut)
	}
	// The TUN exit member enforces exit:NAME in its kernel-forwarding path.
	publish(everyone, nil, path, exitPath)
	if got := eventually(10*time.Second, "", func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != "" {
		t.Errorf("TUN exit member, rules without exit:exit: web still reached (%q)", got)
	}
	publish(everyone+"\n[[rule]]\nfrom = [\"client\"]\nto = [\"exit:exit\"]\nports = [\"tcp:80\"]\n", nil, path, exitPath)
	if got := eventually(10*time.Second, exitOut.String(), func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != exitOut.String() {
		t.Errorf("TUN exit member with a rule to exit:exit: %q", got)
	}
	// The TUN exit member's own book drops exit = true (and rules) while
	// the client still sends through it: it stops forwarding.
	publish("", func(nb *peerbook.Book) { nb.Peers[0].Exit = false }, exitPath)
	if got := eventually(10*time.Second, "", func() string { return curlSocks(clientNS, proxy, web, 2*time.Second) }); got != "" {
		t.Errorf("the TUN exit member forwards after losing exit = true: %q", got)
	}
	if table := exitNS.Run("nft", "list", "table", "inet", "wgmesh_"+exit.IfName); strings.Contains(table, "masquerade") {
		t.Errorf("the TUN exit member still masquerades after losing exit = true:\n%s", table)
	}
}
