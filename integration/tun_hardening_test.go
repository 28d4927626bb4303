package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnsAsk sends one query from ns to server and returns the answer.
func dnsAsk(ns *netNS, server netip.AddrPort, proto, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	var in *dns.Msg
	var err error
	ns.Do(func() {
		c := &dns.Client{Net: proto, Timeout: timeout}
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		in, _, err = c.Exchange(q, server.String())
	})
	return in, err
}

// tryDial connects from ns to addr and returns the server's first line or
// the error.
func tryDial(ns *netNS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.DialTimeout("tcp", addr.String(), timeout) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// TestTUNMeshServicesOnlyFromMesh: a host on the underlay that routes the
// mesh network via a member's LAN address gets nothing from the services
// wgmesh binds to the member's mesh address (mesh DNS, the registry,
// --expose); a member reaches all of them through the mesh.
func TestTUNMeshServicesOnlyFromMesh(t *testing.T) {
	needRoot(t, "ip", "ping", "nft")
	dir := t.TempDir()
	l := newLAN(t, "198.18.0.0/24")
	var ms []*member
	for _, name := range []string{"alpha", "beta"} {
		ns := newNS(t, name)
		m := newMember(t, dir, name, ns)
		m.Underlay = l.attach(ns, "eth0")
		ms = append(ms, m)
	}
	alpha, beta := ms[0], ms[1]
	outsider := newNS(t, "outside")
	l.attach(outsider, "eth0")
	b := meshBook(ms)
	b.Peers[0].Registry = true
	book := writeBook(t, dir, b)
	serveEcho(t, alpha.NS, netip.MustParseAddrPort("127.0.0.1:7101"), "alpha-local")
	alpha.start(t, book, "--mode", "tun", "--interface", alpha.IfName, "--dns", "127.0.0.1:5353", "--expose", "tcp:7100=127.0.0.1:7101")
	beta.start(t, book, "--mode", "tun", "--interface", beta.IfName)
	outsider.Run("ip", "route", "add", "10.42.0.0/16", "via", alpha.Underlay.String())

	dnsAddr := netip.AddrPortFrom(meshAddr4(0), 53)
	expose := netip.AddrPortFrom(meshAddr4(0), 7100)
	registryName := "_wireguard._udp.mesh."

	// Through the mesh, everything answers.
	waitPing(t, beta.NS, meshAddr4(0))
	for _, proto := range []string{"udp", "tcp"} {
		in, err := dnsAsk(beta.NS, dnsAddr, proto, "beta.mesh", dns.TypeA, 5*time.Second)
		if err != nil || len(in.Answer) != 1 || !strings.Contains(in.Answer[0].String(), meshAddr4(1).String()) {
			t.Errorf("beta asks alpha's mesh DNS (%s) for beta.mesh: %v %v", proto, in, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, err := dnsAsk(beta.NS, dnsAddr, "udp", registryName, dns.TypePTR, 5*time.Second)
		if err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("beta asks alpha's registry: %v %v", in, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, err := tryDial(beta.NS, expose, 5*time.Second); err != nil || got != "alpha-local saw 127.0.0.1" {
		t.Errorf("beta -> alpha's exposed port: %q, %v", got, err)
	}

	// From the underlay, nothing does; alpha's LAN address still answers,
	// so the route is there and only the mesh address is closed.
	if out, err := outsider.Try("ping", "-c", "1", "-W", "2", alpha.Underlay.String()); err != nil {
		t.Fatalf("outsider cannot reach alpha's LAN address: %v\n%s", err, out)
	}
	for _, proto := range []string{"udp", "tcp"} {
		if in, err := dnsAsk(outsider, dnsAddr, proto, "beta.mesh", dns.TypeA, 2*time.Second); err == nil {
			t.Errorf("outsider got an answer from alpha's mesh DNS over %s: %v", proto, in)
		}
		if in, err := dnsAsk(outsider, dnsAddr, proto, registryName, dns.TypePTR, 2*time.Second); err == nil {
			t.Errorf("outsider got an answer from alpha's registry over %s: %v", proto, in)
		}
	}
	if got, err := tryDial(outsider, expose, 2*time.Second); err == nil {
		t.Errorf("outsider reached alpha's exposed port: %q", got)
	}
}

// TestTUNSubnetRouterForwardsOnlyItsSubnets: beta routes its LAN
// 192.168.77.0/24 for the mesh; its host also reaches 192.168.78.0/24,
// which it does not list. alpha, a member, sends traffic for the unlisted
// LAN to beta anyway (it adds the prefix to beta's allowed IPs and a route
// on its own host): beta must not forward it, masqueraded or not. The
// listed LAN still works.
func TestTUNSubnetRouterForwardsOnlyItsSubnets(t *testing.T) {
	needRoot(t, "ip", "ping", "nft", "wg")
	for _, masquerade := range []bool{false, true} {
		t.Run(fmt.Sprintf("masquerade=%v", masquerade), func(t *testing.T) {
			dir := t.TempDir()
			ms := newMembers(t, dir, "alpha", "beta")
			alpha, beta := ms[0], ms[1]
			var hosts []*netNS
			for i, lanNet := range []int{77, 78} {
				host := lanHost(t, beta.NS, fmt.Sprintf("lan%d", i), fmt.Sprintf("lan%d", lanNet), lanNet, !masquerade)
				serveEcho(t, host, netip.MustParseAddrPort(fmt.Sprintf("192.168.%d.2:7000", lanNet)), fmt.Sprintf("lan%d", lanNet))
				hosts = append(hosts, host)
			}
			startLANRouter(t, dir, ms, masquerade)

			// The listed LAN works.
			waitPing(t, alpha.NS, netip.MustParseAddr("192.168.77.2"))
			want := "lan77 saw 10.42.0.1"
			if masquerade {
				want = "lan77 saw 192.168.77.1"
			}
			if got := dialEcho(t, alpha.NS, netip.MustParseAddrPort("192.168.77.2:7000")); got != want {
				t.Errorf("listed LAN: got %q, want %q", got, want)
			}

			// alpha sends the unlisted LAN to beta.
			alpha.NS.Run("wg", "set", alpha.IfName, "peer", beta.Key.Public().String(),
				"allowed-ips", "10.42.0.2/32,fd42:42::2/128,192.168.77.0/24,192.168.78.0/24")
			alpha.NS.Run("ip", "route", "add", "192.168.78.0/24", "dev", alpha.IfName)
			if out, err := alpha.NS.Try("ping", "-c", "2", "-W", "1", "192.168.78.2"); err == nil {
				t.Errorf("alpha pings 192.168.78.2, a LAN beta does not route:\n%s", out)
			}
			if got, err := tryDial(alpha.NS, netip.MustParseAddrPort("192.168.78.2:7000"), 2*time.Second); err == nil {
				t.Errorf("alpha reached 192.168.78.2:7000 through beta: %q", got)
			}
			// The listed LAN still works.
			if got := dialEcho(t, alpha.NS, netip.MustParseAddrPort("192.168.77.2:7000")); got != want {
				t.Errorf("listed LAN afterwards: got %q, want %q", got, want)
			}
		})
	}
}

// nftRules lists the rules of wgmesh's tables for ifname in ns (whatever
// their family), one string per rule.
func nftRules(t *testing.T, ns *netNS, ifname string) []string {
	t.Helper()
	var rules []string
	for _, line := range strings.Split(ns.Run("nft", "list", "tables"), "\n") {
		f := strings.Fields(line) // table FAMILY NAME
		if len(f) != 3 || f[2] != "wgmesh_"+ifname {
			continue
		}
		for _, r := range strings.Split(ns.Run("nft", "list", "table", f[1], f[2]), "\n") {
			r = strings.TrimSpace(r)
			if strings.HasSuffix(r, " drop") || strings.HasSuffix(r, " accept") || strings.HasSuffix(r, " masquerade") {
				rules = append(rules, f[1]+": "+r)
			}
		}
	}
	if len(rules) == 0 {
		t.Fatalf("no rules in a wgmesh_%s table:\n%s", ifname, ns.Run("nft", "list", "ruleset"))
	}
	return rules
}

// TestTUNRestartAfterSIGKILL: a member routing a LAN with --masquerade is
// killed with SIGKILL, which leaves its nftables table and ip_forward=1.
// The next run replaces the table (no rule twice) and keeps the original
// ip_forward value, so its clean exit leaves ip_forward 0 and no table.
func TestTUNRestartAfterSIGKILL(t *testing.T) {
	needRoot(t, "ip", "nft")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	ms := newMembers(t, dir, "alpha", "beta")
	beta := ms[1]
	beta.NS.Run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	beta.NS.Run("ip", "addr", "add", "192.168.77.1/24", "dev", "lan0")
	beta.NS.Run("ip", "link", "set", "lan0", "up")
	// A new namespace inherits IPv4 forwarding from the host's.
	beta.NS.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	b := meshBook(ms)
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
	book := writeBook(t, dir, b)
	args := []string{"--mode", "tun", "--interface", beta.IfName, "--masquerade", "--state-dir", state}

	beta.start(t, book, args...)
	first := nftRules(t, beta.NS, beta.IfName)
	stateFile := filepath.Join(state, "sysctl-"+beta.IfName)
	if data, err := os.ReadFile(stateFile); err != nil || !strings.Contains(string(data), "net.ipv4.ip_forward = 0") {
		t.Errorf("state file while running: %q, %v", data, err)
	} else if fi, _ := os.Stat(stateFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file has mode %v, want 0600", fi.Mode().Perm())
	}
	beta.kill()
	if got := strings.TrimSpace(beta.NS.Run("cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Fatalf("after SIGKILL ip_forward is %q; the test expects the leaked 1", got)
	}

	beta.start(t, book, args...)
	if second := nftRules(t, beta.NS, beta.IfName); strings.Join(second, "\n") != strings.Join(first, "\n") {
		t.Errorf("rules after the restart:\n%s\nwant the first run's:\n%s", strings.Join(second, "\n"), strings.Join(first, "\n"))
	}
	if n := strings.Count(beta.NS.Run("nft", "list", "tables"), "wgmesh_"); n != 1 {
		t.Errorf("%d wgmesh tables while running:\n%s", n, beta.NS.Run("nft", "list", "tables"))
	}
	if err := beta.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if got := strings.TrimSpace(beta.NS.Run("cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
		t.Errorf("after the restart's clean exit ip_forward is %q, want the original 0", got)
	}
	if out := beta.NS.Run("nft", "list", "tables"); strings.Contains(out, "wgmesh") {
		t.Errorf("nftables table left behind: %q", out)
	}
	if _, err := os.Stat(stateFile); err == nil {
		t.Errorf("state file %s left behind after a clean exit", stateFile)
	}
}

// TestTUNReloadAddsSubnets: beta starts routing nothing; a reload gives
// it a LAN. It must then forward from the mesh to that LAN (forwarding on,
// the filter's forward chain updated), and restore ip_forward on exit.
func TestTUNReloadAddsSubnets(t *testing.T) {
	needRoot(t, "ip", "nft")
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	alpha, beta := ms[0], ms[1]
	host := lanHost(t, beta.NS, "lan0", "lan77", 77, true)
	serveEcho(t, host, netip.MustParseAddrPort("192.168.77.2:7000"), "lan77")
	beta.NS.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")

	b := meshBook(ms)
	book := writeBook(t, dir, b)
	alpha.start(t, book, "--mode", "tun", "--interface", alpha.IfName)
	beta.start(t, book, "--mode", "tun", "--interface", beta.IfName)

	b.Serial = 2
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}
	writeBook(t, dir, b)
	deadline := time.Now().Add(15 * time.Second)
	for {
		stA, errA := alpha.status()
		stB, errB := beta.status()
		if errA == nil && errB == nil && stA.BookSerial == 2 && stB.BookSerial == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reload did not reach both members: %v %v", errA, errB)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, err := tryDial(alpha.NS, netip.MustParseAddrPort("192.168.77.2:7000"), 10*time.Second); err != nil || got != "lan77 saw 10.42.0.1" {
		t.Errorf("alpha -> beta's new LAN after the reload: %q, %v", got, err)
	}
	if err := beta.stop(); err != nil {
		t.Error(err)
	}
	if got := strings.TrimSpace(beta.NS.Run("cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
		t.Errorf("ip_forward after exit: %q, want 0", got)
	}
}
