package integration

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// sameNATMesh starts a public registry member and two members a and b on
// one home LAN behind one NAT router that does not hairpin (a packet from
// the LAN to the router's public address goes nowhere), all in TUN mode.
// It returns them with a's and b's LAN addresses.
func sameNATMesh(t *testing.T, lanCandidates bool) (pub, a, b *member, aLAN, bLAN netip.Addr) {
	t.Helper()
	dir := t.TempDir()
	inet := newLAN(t, "198.18.100.0/24")
	pubNS := newNS(t, "pub")
	pub = newMember(t, dir, "pub", pubNS)
	pub.Underlay = inet.attach(pubNS, "eth0")

	r := newNS(t, "rhome")
	wan := inet.attach(r, "wan0")
	home := newLAN(t, "192.168.60.0/24")
	gw := home.attach(r, "lan0")
	r.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	r.Run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
	for _, chain := range []string{"FORWARD", "INPUT"} {
		r.Run("iptables", "-A", chain, "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		r.Run("iptables", "-A", chain, "-i", "wan0", "-j", "DROP")
	}
	// No hairpin: the LAN cannot reach the members' public mappings.
	r.Run("iptables", "-A", "INPUT", "-i", "lan0", "-d", wan.String(), "-p", "udp", "-j", "DROP")

	aNS, bNS := newNS(t, "ha"), newNS(t, "hb")
	aLAN, bLAN = home.attach(aNS, "eth0"), home.attach(bNS, "eth0")
	for _, ns := range []*netNS{aNS, bNS} {
		ns.Run("ip", "route", "add", "default", "via", gw.String())
	}
	a = newMember(t, dir, "a", aNS)
	b = newMember(t, dir, "b", bNS)
	book := meshBook([]*member{pub, a, b}) // a and b have no endpoint
	book.Peers[0].Registry = true
	book.Mesh.NoLANCandidates = !lanCandidates
	path := writeBook(t, dir, book)
	for _, m := range []*member{pub, a, b} {
		m.start(t, path, "--mode", "tun", "--interface", m.IfName)
	}
	return pub, a, b, aLAN, bLAN
}

// endpointOf returns m's endpoint for peer from its status.
func endpointOf(t *testing.T, m *member, peer string) string {
	t.Helper()
	st, err := m.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if p.Name == peer {
			return p.Endpoint
		}
	}
	t.Fatalf("%s has no peer %s", m.Name, peer)
	return ""
}

// TestLANCandidatesSameNAT: two members behind one NAT router without
// hairpin find each other's LAN addresses through the registry and meet
// directly over the LAN; a 5 MiB transfer between them moves almost
// nothing through the public member.
func TestLANCandidatesSameNAT(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	start := time.Now()
	pub, a, b, aLAN, bLAN := sameNATMesh(t, true)
	waitPath(t, a, "b", "direct", 20*time.Second)
	waitPath(t, b, "a", "direct", 20*time.Second-time.Since(start))
	t.Logf("time to a direct path over the LAN behind one NAT: %v", time.Since(start).Round(10*time.Millisecond))
	if ep := endpointOf(t, a, "b"); ep != netip.AddrPortFrom(bLAN, 51820).String() {
		t.Errorf("a's endpoint for b is %q, want b's LAN address %s", ep, bLAN)
	}
	if ep := endpointOf(t, b, "a"); ep != netip.AddrPortFrom(aLAN, 51820).String() {
		t.Errorf("b's endpoint for a is %q, want a's LAN address %s", ep, aLAN)
	}
	before := counters(t, pub, "a") + counters(t, pub, "b")
	transfer(t, b, meshAddr4(2), a, 5<<20)
	d := counters(t, pub, "a") + counters(t, pub, "b") - before
	t.Logf("bytes through the public member during a 5 MiB transfer: %d", d)
	if d > 256<<10 {
		t.Errorf("pub moved %d bytes during a LAN transfer", d)
	}
}

// TestLANCandidatesOff: with lan_candidates = false the same members do
// not learn each other's LAN addresses, so, without a relay, they never
// get a direct path (the registry publishes no lan= for them either).
func TestLANCandidatesOff(t *testing.T) {
	needRoot(t, "ip", "iptables", "ping")
	_, a, b, _, _ := sameNATMesh(t, false)
	time.Sleep(12 * time.Second)
	for _, m := range []*member{a, b} {
		st, err := m.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if (p.Name == "a" || p.Name == "b") && (p.Path == "direct" || strings.HasPrefix(p.Endpoint, "192.168.60.")) {
				t.Errorf("%s reaches %s at %s (%s) with lan_candidates = false", m.Name, p.Name, p.Endpoint, p.Path)
			}
		}
	}
}
