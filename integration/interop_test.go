package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stripWGQuick removes the wg-quick-only keys (Address, DNS, MTU, Table,
// Pre/PostUp/Down, SaveConfig) so `wg setconf` accepts the file, as
// `wg-quick strip` does.
func stripWGQuick(conf []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		line := sc.Text()
		key, _, _ := strings.Cut(line, "=")
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig":
			continue
		}
		out.WriteString(line + "\n")
	}
	return out.Bytes()
}

// TestInteropPlainWireGuard makes gamma a plain WireGuard member: Debian's
// wireguard-go configured with wg(8) from `wgmesh book export`.
func TestInteropPlainWireGuard(t *testing.T) {
	needRoot(t, "ip", "ping", "wg", "wireguard-go")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	bookPath := writeBook(t, dir, meshBook(ms))
	for _, m := range ms[:2] {
		m.start(t, bookPath, "--mode", "tun", "--interface", m.IfName)
	}
	gamma := ms[2]
	conf := run(t, wgmeshBin, "book", "export", "--peer", "gamma", "--key", gamma.KeyFile, bookPath)
	for _, want := range []string{"[Interface]", "Address = 10.42.0.3/16", "ListenPort = 51820", "PrivateKey = ", "Endpoint = 198.18.0.2:51820"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("export lacks %q:\n%s", want, conf)
		}
	}
	stripped := filepath.Join(dir, "gamma.conf")
	if err := os.WriteFile(stripped, stripWGQuick([]byte(conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	wg := exec.Command("ip", "netns", "exec", gamma.NS.Name, "wireguard-go", "-f", gamma.IfName)
	var wgLog bytes.Buffer
	wg.Stdout, wg.Stderr = &wgLog, &wgLog
	if err := wg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		wg.Process.Kill()
		wg.Wait()
		os.Remove("/var/run/wireguard/" + gamma.IfName + ".sock")
		if t.Failed() {
			t.Logf("wireguard-go log:\n%s", wgLog.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := gamma.NS.Try("ip", "link", "show", gamma.IfName); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go did not create %s", gamma.IfName)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gamma.NS.Run("wg", "setconf", gamma.IfName, stripped)
	gamma.NS.Run("ip", "addr", "add", "10.42.0.3/16", "dev", gamma.IfName)
	gamma.NS.Run("ip", "addr", "add", "fd42:42::3/64", "dev", gamma.IfName, "nodad")
	gamma.NS.Run("ip", "link", "set", gamma.IfName, "mtu", "1420", "up")

	for i, m := range ms {
		serveEcho(t, m.NS, netip.AddrPortFrom(meshAddr4(i), 7000), m.Name)
	}
	for i, from := range ms {
		for j, to := range ms {
			if i == j {
				continue
			}
			waitPing(t, from.NS, meshAddr4(j))
			waitPing(t, from.NS, meshAddr6(j))
			got := dialEcho(t, from.NS, netip.AddrPortFrom(meshAddr4(j), 7000))
			if want := fmt.Sprintf("%s saw %s", to.Name, meshAddr4(i)); got != want {
				t.Errorf("%s -> %s: got %q, want %q", from.Name, to.Name, got, want)
			}
		}
	}
}

// TestMixedModes joins a TUN member and a netstack member of one mesh.
func TestMixedModes(t *testing.T) {
	needRoot(t, "ip")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	alpha, beta := ms[0], ms[1]
	bookPath := writeBook(t, dir, meshBook(ms))

	// beta (netstack) exposes a server on its own loopback as mesh port 80.
	serveEcho(t, beta.NS, netip.MustParseAddrPort("127.0.0.1:8001"), "beta-local")
	alpha.start(t, bookPath, "--mode", "tun", "--interface", alpha.IfName)
	// alpha (TUN) serves on its mesh address; beta forwards a local port to it.
	serveEcho(t, alpha.NS, netip.AddrPortFrom(meshAddr4(0), 7000), "alpha")
	beta.start(t, bookPath, "--mode", "netstack",
		"--expose", "tcp:80=127.0.0.1:8001",
		"--forward", "tcp:127.0.0.1:8002=alpha:7000")

	// The netstack member answers ICMP echo on its mesh addresses.
	waitPing(t, alpha.NS, meshAddr4(1))
	// TUN -> netstack: a kernel socket in alpha's namespace.
	var got string
	deadline := time.Now().Add(15 * time.Second)
	for {
		var c net.Conn
		var err error
		alpha.NS.Do(func() { c, err = net.DialTimeout("tcp", "10.42.0.2:80", 3*time.Second) })
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 128)
			n, _ := c.Read(buf)
			c.Close()
			got = strings.TrimSpace(string(buf[:n]))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alpha -> beta:80: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.HasPrefix(got, "beta-local saw 127.0.0.1") {
		t.Errorf("alpha -> beta: got %q", got)
	}
	// netstack -> TUN: through beta's forward; alpha sees beta's mesh address.
	got = dialEcho(t, beta.NS, netip.MustParseAddrPort("127.0.0.1:8002"))
	if got != "alpha saw 10.42.0.2" {
		t.Errorf("beta -> alpha: got %q", got)
	}
}
