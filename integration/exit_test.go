package integration

import (
	"bufio"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestExitNodeTUN: "web" is a host on a network only the exit member
// reaches. A member started with --exit-node exit reaches it through the
// mesh, and web sees the exit member's address; the WireGuard path to the
// exit member (an underlay endpoint) keeps working under the default
// route; the routes and rules go away when the member stops; the exit
// member clamps the MSS of forwarded SYNs; a member that is not an exit
// member is refused as exit node.
func TestExitNodeTUN(t *testing.T) {
	needRoot(t, "ip", "nft")
	dir := t.TempDir()
	underlay := newLAN(t, "198.18.110.0/24")
	outside := newLAN(t, "203.0.113.0/24")
	exitNS, clientNS, webNS := newNS(t, "exit"), newNS(t, "client"), newNS(t, "web")
	exit := newMember(t, dir, "exit", exitNS)
	client := newMember(t, dir, "client", clientNS)
	exit.Underlay = underlay.attach(exitNS, "eth0")
	client.Underlay = underlay.attach(clientNS, "eth0")
	exitOut := outside.attach(exitNS, "eth1")
	webAddr := outside.attach(webNS, "eth0")
	webNS.Run("ip", "route", "add", "default", "via", exitOut.String())

	// web answers with the address it sees.
	var ln net.Listener
	var err error
	webNS.Do(func() { ln, err = net.Listen("tcp", netip.AddrPortFrom(webAddr, 80).String()) })
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) {
		c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String() + "\n"))
	})
	if out, err := clientNS.Try("ip", "route", "get", webAddr.String()); err == nil {
		t.Fatalf("client reaches web without the mesh: %s", out)
	}

	book := meshBook([]*member{exit, client})
	// First without exit = true: refused.
	path := writeBook(t, dir, book)
	out, err := exec.Command("ip", "netns", "exec", clientNS.Name, wgmeshBin, "up", "--book", path, "--key", client.KeyFile,
		"--control", client.Control, "--state-dir", dir+"/refused", "--mode", "tun", "--interface", client.IfName, "--exit-node", "exit").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `member "exit" is not an exit member; set exit = true`) {
		t.Fatalf("exit node without exit = true: err %v\n%s", err, out)
	}

	book.Peers[0].Exit = true
	path = writeBook(t, dir, book)
	exit.start(t, path, "--mode", "tun", "--interface", exit.IfName)
	client.start(t, path, "--mode", "tun", "--interface", client.IfName, "--exit-node", "exit")

	seen := ""
	deadline := time.Now().Add(15 * time.Second)
	for seen == "" {
		clientNS.Do(func() {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(webAddr, 80).String(), 2*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			seen, _ = bufio.NewReader(c).ReadString('\n')
		})
		if seen == "" && time.Now().After(deadline) {
			t.Fatal("client does not reach web through the exit member")
		}
	}
	if got := strings.TrimSpace(seen); got != exitOut.String() {
		t.Fatalf("web saw %s, want the exit member's address %s", got, exitOut)
	}
	t.Logf("web saw the exit member's address %s", exitOut)
	st, err := client.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if p.Name == "exit" && (p.Endpoint != netip.AddrPortFrom(exit.Underlay, 51820).String() || p.Path != "direct") {
			t.Errorf("client's path to exit: %+v", p)
		}
	}
	table := exitNS.Run("nft", "list", "table", "inet", "wgmesh_"+exit.IfName)
	if !strings.Contains(table, "maxseg size set rt mtu") {
		t.Errorf("the exit member does not clamp the MSS:\n%s", table)
	}
	rules := clientNS.Run("ip", "rule", "show")
	if !strings.Contains(rules, "not from all fwmark") || !strings.Contains(rules, "suppress_prefixlength 0") {
		t.Errorf("client's rules:\n%s", rules)
	}

	// kill -9 leaves the rules; the next start replaces them.
	client.kill()
	client.start(t, path, "--mode", "tun", "--interface", client.IfName, "--exit-node", "exit")
	if again := clientNS.Run("ip", "rule", "show"); strings.Count(again, "suppress_prefixlength") != strings.Count(rules, "suppress_prefixlength") {
		t.Errorf("rules after kill -9 and restart:\n%s\nbefore:\n%s", again, rules)
	}
	if err := client.stop(); err != nil {
		t.Fatal(err)
	}
	if rules := clientNS.Run("ip", "rule", "show"); strings.Contains(rules, "fwmark") || strings.Contains(rules, "suppress_prefixlength") {
		t.Errorf("rules left after the member stopped:\n%s", rules)
	}
	if routes := clientNS.Run("ip", "route", "show", "table", "all"); strings.Contains(routes, "default") {
		t.Errorf("default route left after the member stopped:\n%s", routes)
	}
}
