package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Paths that survive faults: relay failover, loss, NAT state lost or
// changed, a member killed and restarted, and the conntrack deadlock of
// cone NAT routers that accept unsolicited packets.

// natOpts shapes a faultMesh.
type natOpts struct {
	// symmetric: routers masquerade with --random-fully.
	symmetric bool
	// relays is how many public members there are, all relays; the first
	// is also the registry.
	relays int
	// openInput: the routers do not drop unsolicited packets addressed
	// to themselves (INPUT), only forwarded ones.
	openInput bool
}

// natTestbed is a faultMesh: public members and two members behind NAT
// routers.
type natTestbed struct {
	pubs   []*member
	a, b   *member
	sa, sb natSite
	book   string
	start  time.Time
}

// behindNATWith is behindNAT with openInput.
func behindNATWith(t *testing.T, inet *lan, name string, lanNet int, o natOpts) natSite {
	t.Helper()
	if !o.openInput {
		return behindNAT(t, inet, name, lanNet, o.symmetric)
	}
	r := newNS(t, "r"+name)
	inet.attach(r, "wan0")
	h := lanHost(t, r, "lan0", name, lanNet, true)
	r.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	masq := []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"}
	if o.symmetric {
		masq = append(masq, "--random-fully")
	}
	r.Run(masq...)
	r.Run("iptables", "-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	r.Run("iptables", "-A", "FORWARD", "-i", "wan0", "-j", "DROP")
	return natSite{router: r, host: h}
}

func faultMesh(t *testing.T, o natOpts) *natTestbed {
	t.Helper()
	if o.relays == 0 {
		o.relays = 1
	}
	dir := t.TempDir()
	inet := newLAN(t, "198.18.100.0/24")
	tb := &natTestbed{}
	var all []*member
	for i := range o.relays {
		name := fmt.Sprintf("pub%d", i+1)
		ns := newNS(t, name)
		m := newMember(t, dir, name, ns)
		m.Underlay = inet.attach(ns, "eth0")
		tb.pubs = append(tb.pubs, m)
		all = append(all, m)
	}
	tb.sa = behindNATWith(t, inet, "a", 10, o)
	tb.sb = behindNATWith(t, inet, "b", 20, o)
	tb.a = newMember(t, dir, "a", tb.sa.host)
	tb.b = newMember(t, dir, "b", tb.sb.host)
	all = append(all, tb.a, tb.b)
	book := meshBook(all)
	for i := range o.relays {
		book.Peers[i].Relay = true
	}
	book.Peers[0].Registry = true
	tb.book = writeBook(t, dir, book)
	tb.start = time.Now()
	for _, m := range all {
		m.start(t, tb.book, "--mode", "tun", "--interface", m.IfName)
	}
	return tb
}

// addrOf is the mesh address of the member at book index i.
func (tb *natTestbed) addrA() netip.Addr { return meshAddr4(len(tb.pubs)) }
func (tb *natTestbed) addrB() netip.Addr { return meshAddr4(len(tb.pubs) + 1) }

// reachWithin pings dst from ns until a reply comes and returns how long
// that took; it fails the test after within.
func reachWithin(t *testing.T, ns *netNS, dst netip.Addr, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		out, err := ns.Try("ping", "-c", "1", "-W", "1", dst.String())
		if err == nil {
			return time.Since(began)
		}
		if time.Since(began) > within {
			t.Fatalf("%s does not reach %s within %v: %s", ns.Name, dst, within, strings.TrimSpace(out))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNATRelayFailover: a and b, behind symmetric NATs, talk through
// pub1; pub1 is killed (SIGKILL) and they move to pub2 within 10 s.
func TestNATRelayFailover(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	tb := faultMesh(t, natOpts{symmetric: true, relays: 2})
	waitPath(t, tb.a, "b", "relayed via pub1", 10*time.Second-time.Since(tb.start))
	waitPath(t, tb.b, "a", "relayed via pub1", 10*time.Second-time.Since(tb.start))
	reachWithin(t, tb.a.NS, tb.addrB(), 5*time.Second)
	tb.pubs[0].kill()
	killed := time.Now()
	waitPath(t, tb.a, "b", "relayed via pub2", 10*time.Second)
	waitPath(t, tb.b, "a", "relayed via pub2", 10*time.Second-time.Since(killed))
	reachWithin(t, tb.a.NS, tb.addrB(), 10*time.Second-time.Since(killed))
	t.Logf("relay failover after SIGKILL of the first relay: reachable through the second in %v", time.Since(killed).Round(10*time.Millisecond))
	transfer(t, tb.b, tb.addrB(), tb.a, 1<<20)
}

// TestNATKillRestart: b is killed with SIGKILL and started again; a
// reaches it within 5 s of the restart.
func TestNATKillRestart(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	tb := faultMesh(t, natOpts{})
	waitPath(t, tb.a, "b", "direct", 15*time.Second)
	reachWithin(t, tb.a.NS, tb.addrB(), 5*time.Second)
	tb.b.kill()
	time.Sleep(time.Second)
	restarted := time.Now()
	tb.b.start(t, tb.book, "--mode", "tun", "--interface", tb.b.IfName)
	d := reachWithin(t, tb.a.NS, tb.addrB(), 5*time.Second-time.Since(restarted))
	t.Logf("kill -9 and restart of a member: reachable %v after the restart (%v after its control socket answered)", time.Since(restarted).Round(10*time.Millisecond), d.Round(10*time.Millisecond))
}

// TestNATRandomLoss: 5 % of packets dropped at random on both routers,
// both ways; 5 MiB arrive byte-exact.
func TestNATRandomLoss(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	tb := faultMesh(t, natOpts{})
	waitPath(t, tb.a, "b", "direct", 15*time.Second)
	for _, r := range []*netNS{tb.sa.router, tb.sb.router} {
		r.Run("iptables", "-I", "FORWARD", "1", "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP")
	}
	rate := transfer(t, tb.b, tb.addrB(), tb.a, 5<<20)
	var drops []string
	for _, r := range []*netNS{tb.sa.router, tb.sb.router} {
		out := r.Run("iptables", "-L", "FORWARD", "1", "-v", "-n", "-x")
		f := strings.Fields(out)
		if len(f) == 0 || f[0] == "0" {
			t.Fatalf("the loss rule on %s dropped nothing: %s", r.Name, out)
		}
		drops = append(drops, f[0])
	}
	t.Logf("5 MiB through 5 %% random loss on both routers: byte-exact, %.0f Mbit/s, packets dropped by the routers: %s", rate, strings.Join(drops, ", "))
}

// TestNATMappingChange: both routers forget their NAT state (conntrack
// -F) and masquerade into a new port range; a and b find each other again
// within 30 s.
func TestNATMappingChange(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping", "conntrack")
	tb := faultMesh(t, natOpts{})
	waitPath(t, tb.a, "b", "direct", 15*time.Second)
	reachWithin(t, tb.a.NS, tb.addrB(), 5*time.Second)
	for _, r := range []*netNS{tb.sa.router, tb.sb.router} {
		r.Run("iptables", "-t", "nat", "-R", "POSTROUTING", "1", "-o", "wan0", "-p", "udp", "-j", "MASQUERADE", "--to-ports", "40000-40999")
		r.Run("conntrack", "-F")
	}
	// Both sides talk, as in a conversation: b pings a meanwhile.
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.b.NS.Try("ping", "-q", "-i", "0.5", "-w", "20", tb.addrA().String())
	}()
	t.Cleanup(func() { <-done })
	d := reachWithin(t, tb.a.NS, tb.addrB(), 30*time.Second)
	t.Logf("conntrack flush and a new port range on both routers: reachable again in %v", d.Round(10*time.Millisecond))
	waitPath(t, tb.a, "b", "direct", 5*time.Second)
	transfer(t, tb.b, tb.addrB(), tb.a, 1<<20)
}

// TestNATConntrackDeadlock: cone NAT routers that do not drop unsolicited
// packets addressed to themselves. The first initiation to land on the
// far router leaves a conntrack entry there for the far member's mapping,
// so the far router's MASQUERADE picks another port for it and the two
// never meet on the ports the registry published; keepalives would keep
// that state forever. a reaches b within 20 s anyway.
func TestNATConntrackDeadlock(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	tb := faultMesh(t, natOpts{openInput: true})
	d := reachWithin(t, tb.a.NS, tb.addrB(), 20*time.Second-time.Since(tb.start))
	st, _ := tb.a.status()
	path := ""
	for _, p := range st.Peers {
		if p.Name == "b" {
			path = p.Path
		}
	}
	t.Logf("deadlock topology: a reaches b %v after start (%s)", (time.Since(tb.start) - 0*d).Round(10*time.Millisecond), path)
}
