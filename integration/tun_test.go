package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// meshBook returns a book for members with mesh addresses 10.42.0.N and
// fd42:42::N and endpoints on their underlay addresses.
func meshBook(members []*member) *peerbook.Book {
	b := &peerbook.Book{
		Format: 1,
		Serial: 1,
		Mesh: peerbook.Mesh{
			Domain:              "mesh",
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
			ListenPort:          51820,
			MTU:                 1420,
			PersistentKeepalive: 25,
		},
	}
	for i, m := range members {
		p := peerbook.Peer{
			Name:      m.Name,
			PublicKey: m.Key.Public(),
			Addresses: []netip.Addr{meshAddr4(i), meshAddr6(i)},
		}
		if m.Underlay.IsValid() {
			p.Endpoint = peerbook.Endpoint{Host: m.Underlay.String(), Port: 51820}
		}
		b.Peers = append(b.Peers, p)
	}
	return b
}

func meshAddr4(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)}) }
func meshAddr6(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd42:42::%d", i+1)) }

// newMembers makes n namespaces on one LAN, each with a member.
func newMembers(t *testing.T, dir string, names ...string) []*member {
	l := newLAN(t, "198.18.0.0/24")
	var ms []*member
	for _, name := range names {
		ns := newNS(t, name)
		m := newMember(t, dir, name, ns)
		m.Underlay = l.attach(ns, "eth0")
		ms = append(ms, m)
	}
	return ms
}

// waitPing pings dst from ns until it answers or 15 s pass.
func waitPing(t *testing.T, ns *netNS, dst netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := ns.Try("ping", "-c", "1", "-W", "1", dst.String())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping %s from %s: %v\n%s", dst, ns.Name, err, out)
		}
	}
}

// serveEcho runs a TCP server in ns on addr that answers with its name
// and the peer address it saw, then echoes.
func serveEcho(t *testing.T, ns *netNS, addr netip.AddrPort, name string) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(func() { ln, err = net.Listen("tcp", addr.String()) })
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		fmt.Fprintf(c, "%s saw %s\n", name, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
		io.Copy(c, c)
	})
}

// dialEcho connects from ns to addr and returns the server's greeting.
func dialEcho(t *testing.T, ns *netNS, addr netip.AddrPort) string {
	t.Helper()
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second) })
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(string(buf[:n]))
}

func TestTUNThreeMembers(t *testing.T) {
	needRoot(t, "ip", "ping", "wg")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	book := writeBook(t, dir, meshBook(ms))
	for _, m := range ms {
		m.start(t, book, "--mode", "tun", "--interface", m.IfName)
	}
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
	// The stock wg tool sees the other two members through the UAPI socket.
	for _, m := range ms {
		dump := m.NS.Run("wg", "show", m.IfName, "dump")
		lines := strings.Split(strings.TrimSpace(dump), "\n")
		if len(lines) != 3 { // interface line + two peers
			t.Errorf("%s: wg show dump:\n%s", m.Name, dump)
		}
		for _, other := range ms {
			if other != m && !strings.Contains(dump, other.Key.Public().String()) {
				t.Errorf("%s: wg show lacks %s", m.Name, other.Name)
			}
		}
		out := m.NS.Run(wgmeshBin, "status", "--json", "--control", m.Control)
		if strings.Contains(out, m.Key.Encode()) {
			t.Errorf("%s: status shows the private key", m.Name)
		}
	}
	// Changes made with wg set behind wgmesh's back show in its status.
	stranger, _ := peerbook.GeneratePrivateKey()
	ms[0].NS.Run("wg", "set", ms[0].IfName, "peer", stranger.Public().String(), "allowed-ips", "10.42.9.9/32")
	st, err := ms[0].status()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range st.Peers {
		if p.PublicKey == stranger.Public().String() && p.NotInBook {
			found = true
		}
	}
	if !found {
		t.Errorf("peer added with wg set is missing from status: %+v", st.Peers)
	}
	// Clean exit: no interface, socket or route remains.
	for _, m := range ms {
		if err := m.stop(); err != nil {
			t.Errorf("%s: %v", m.Name, err)
		}
		if out, err := m.NS.Try("ip", "link", "show", m.IfName); err == nil {
			t.Errorf("%s: %s still exists after SIGTERM:\n%s", m.Name, m.IfName, out)
		}
		if _, err := os.Stat("/var/run/wireguard/" + m.IfName + ".sock"); err == nil {
			t.Errorf("%s: UAPI socket left behind", m.Name)
		}
	}
}

// startLANRouter starts alpha and beta (ms[0], ms[1]) in TUN mode on a
// book in which beta routes 192.168.77.0/24, with --masquerade if asked.
func startLANRouter(t *testing.T, dir string, ms []*member, masquerade bool) {
	t.Helper()
	alpha, beta := ms[0], ms[1]
	b := meshBook(ms)
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
	book := writeBook(t, dir, b)
	alpha.start(t, book, "--mode", "tun", "--interface", alpha.IfName)
	args := []string{"--mode", "tun", "--interface", beta.IfName}
	if masquerade {
		args = append(args, "--masquerade")
	}
	beta.start(t, book, args...)
}

func TestTUNSubnetRouting(t *testing.T) {
	needRoot(t, "ip", "ping", "nft")
	for _, masquerade := range []bool{false, true} {
		t.Run(fmt.Sprintf("masquerade=%v", masquerade), func(t *testing.T) {
			dir := t.TempDir()
			ms := newMembers(t, dir, "alpha", "beta")
			alpha, beta := ms[0], ms[1]
			// A LAN host behind beta.
			// Masqueraded, the LAN's router needs no way back to the mesh.
			host := lanHost(t, beta.NS, "lan0", "lanhost", 77, !masquerade)
			// A new namespace inherits IPv4 forwarding from the host's:
			// start from off, so that restoring it shows.
			beta.NS.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
			forwardBefore := beta.NS.Run("cat", "/proc/sys/net/ipv4/ip_forward")
			startLANRouter(t, dir, ms, masquerade)

			// alpha routes the subnet through the mesh.
			if out := alpha.NS.Run("ip", "route", "show", "192.168.77.0/24"); !strings.Contains(out, alpha.IfName) {
				t.Fatalf("alpha has no route to beta's subnet: %q", out)
			}
			waitPing(t, alpha.NS, netip.MustParseAddr("192.168.77.2"))
			serveEcho(t, host, netip.MustParseAddrPort("192.168.77.2:7000"), "lanhost")
			got := dialEcho(t, alpha.NS, netip.MustParseAddrPort("192.168.77.2:7000"))
			want := "lanhost saw 10.42.0.1"
			if masquerade {
				want = "lanhost saw 192.168.77.1"
			}
			if got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if masquerade {
				if out := beta.NS.Run("nft", "list", "tables"); !strings.Contains(out, "wgmesh_"+beta.IfName) {
					t.Errorf("no masquerade table while running: %q", out)
				}
			}
			for _, m := range ms {
				if err := m.stop(); err != nil {
					t.Error(err)
				}
			}
			if out := alpha.NS.Run("ip", "route", "show", "192.168.77.0/24"); strings.TrimSpace(out) != "" {
				t.Errorf("route left behind on alpha: %q", out)
			}
			if out := beta.NS.Run("nft", "list", "tables"); strings.Contains(out, "wgmesh") {
				t.Errorf("nftables table left behind on beta: %q", out)
			}
			if out := beta.NS.Run("cat", "/proc/sys/net/ipv4/ip_forward"); out != forwardBefore {
				t.Errorf("ip_forward not restored on beta: %q, was %q", out, forwardBefore)
			}
		})
	}
}

// TestTUNCleanUpOnSIGTERM sends SIGTERM, as systemd and docker stop do,
// to a member that routes a LAN with --masquerade and routes another
// member's subnet, and checks that everything it set up is gone.
func TestTUNCleanUpOnSIGTERM(t *testing.T) {
	needRoot(t, "ip", "nft")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	ms := newMembers(t, dir, "alpha", "beta")
	beta := ms[1] // alpha is only in the book, with a subnet beta routes
	b := meshBook(ms)
	b.Peers[0].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.66.0/24")}
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
	book := writeBook(t, dir, b)
	// A new namespace inherits IPv4 forwarding from the host's.
	beta.NS.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	beta.start(t, book, "--mode", "tun", "--interface", beta.IfName, "--masquerade", "--state-dir", state)

	stateFile := filepath.Join(state, "sysctl-"+beta.IfName)
	checks := []struct {
		what string
		args []string
		ok   func(string, error) bool // true while beta runs
	}{
		{"interface", []string{"ip", "link", "show", beta.IfName}, func(_ string, err error) bool { return err == nil }},
		{"route to alpha's subnet", []string{"ip", "route", "show", "192.168.66.0/24"}, func(out string, _ error) bool { return strings.Contains(out, beta.IfName) }},
		{"nftables table", []string{"nft", "list", "tables"}, func(out string, _ error) bool { return strings.Contains(out, "wgmesh_"+beta.IfName) }},
		{"ip_forward", []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, func(out string, _ error) bool { return strings.TrimSpace(out) == "1" }},
		{"IPv6 forwarding", []string{"cat", "/proc/sys/net/ipv6/conf/all/forwarding"}, func(out string, _ error) bool { return strings.TrimSpace(out) == "1" }},
		{"state file", []string{"cat", stateFile}, func(_ string, err error) bool { return err == nil }},
		{"UAPI socket", []string{"ls", "/var/run/wireguard/" + beta.IfName + ".sock"}, func(_ string, err error) bool { return err == nil }},
	}
	for _, c := range checks {
		if out, err := beta.NS.Try(c.args...); !c.ok(out, err) {
			t.Errorf("while running: no %s: %v\n%s", c.what, err, out)
		}
	}
	if err := beta.signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: want a clean exit, got %v", err)
	}
	for _, c := range checks {
		if out, err := beta.NS.Try(c.args...); c.ok(out, err) {
			t.Errorf("after SIGTERM: %s is still there:\n%s", c.what, out)
		}
	}
}

func TestTUNErrors(t *testing.T) {
	needRoot(t, "ip")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := writeBook(t, dir, meshBook(ms))
	alpha := ms[0]
	// Interface name taken.
	alpha.NS.Run("ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken1")
	out, err := alpha.NS.Try(wgmeshBin, "up", "--book", book, "--key", alpha.KeyFile, "--control", alpha.Control, "--mode", "tun", "--interface", "taken0")
	if err == nil || !strings.Contains(out, "taken0 already exists") {
		t.Errorf("taken interface: err %v, output:\n%s", err, out)
	}
	// A route that conflicts with an existing one.
	b := meshBook(ms)
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.88.0/24")}
	conflict := filepath.Join(dir, "conflict.toml")
	os.WriteFile(conflict, peerbook.Marshal(b), 0o644)
	alpha.NS.Run("ip", "link", "set", "taken0", "up")
	alpha.NS.Run("ip", "route", "add", "192.168.88.0/24", "dev", "taken0")
	out, err = alpha.NS.Try(wgmeshBin, "up", "--book", conflict, "--key", alpha.KeyFile, "--control", alpha.Control, "--mode", "tun")
	if err == nil || !strings.Contains(out, "192.168.88.0/24 already exists via taken0") {
		t.Errorf("conflicting route: err %v, output:\n%s", err, out)
	}
	if out, err := alpha.NS.Try("ip", "link", "show", "wgmesh0"); err == nil {
		t.Errorf("failed start-up left wgmesh0 behind:\n%s", out)
	}
	if _, err := os.Stat("/var/run/wireguard/wgmesh0.sock"); err == nil {
		t.Errorf("failed start-up left its UAPI socket behind")
	}
	// Not root: a clear hint at netstack mode. The unprivileged user
	// gets its own copies of the book and key.
	nobody := t.TempDir()
	os.Chmod(nobody, 0o755)
	os.Chown(nobody, 65534, 65534)
	os.Chmod(filepath.Dir(nobody), 0o755)
	key := filepath.Join(nobody, "alpha.key")
	peerbook.WriteKeyFile(key, alpha.Key)
	os.Chown(key, 65534, 65534)
	data, _ := os.ReadFile(book)
	nbook := filepath.Join(nobody, "book.toml")
	os.WriteFile(nbook, data, 0o644)
	out, err = alpha.NS.Try("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", wgmeshBin, "up", "--book", nbook, "--key", key, "--control", filepath.Join(nobody, "np.sock"), "--mode", "tun", "--interface", "wgm-nobody")
	if err == nil || !strings.Contains(out, "--mode netstack") {
		t.Errorf("unprivileged tun: err %v, output:\n%s", err, out)
	}
}
