package filter

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

func key(i int) string {
	var k [32]byte
	k[0], k[31] = byte(i), 0x55
	return base64.StdEncoding.EncodeToString(k[:])
}

func mustKey(t testing.TB, i int) peerbook.Key {
	t.Helper()
	k, err := peerbook.ParseKey(key(i))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testBook is the mesh of the decision tests, seen from srv (key 1).
func testBook(rules string) string {
	return `format = 1
[mesh]
networks = ["10.42.0.0/16", "fd42::/64"]

[[peer]]
name = "srv"
public_key = "` + key(1) + `"
addresses = ["10.42.0.1", "fd42::1"]
subnets = ["192.168.10.0/24"]
groups = ["servers"]

[[peer]]
name = "laptop"
public_key = "` + key(2) + `"
addresses = ["10.42.0.2", "fd42::2"]
groups = ["staff"]

[[peer]]
name = "ci"
public_key = "` + key(3) + `"
addresses = ["10.42.0.3", "fd42::3"]

[[peer]]
name = "phone"
public_key = "` + key(4) + `"
addresses = ["10.42.0.4"]

[[peer]]
name = "home"
public_key = "` + key(5) + `"
addresses = ["10.42.0.5"]
subnets = ["192.168.50.0/24"]

[[peer]]
name = "admin"
public_key = "` + key(6) + `"
addresses = ["10.42.0.6", "fd42::6"]
` + rules
}

const testRules = `
[[rule]]
from = ["group:staff"]
to = ["group:servers"]
ports = ["tcp:22", "tcp:8000-8100", "udp:5000", "icmp"]

[[rule]]
from = ["ci"]
to = ["srv"]
ports = ["tcp:443"]

[[rule]]
from = ["*"]
to = ["srv"]
ports = ["udp:9999"]

[[rule]]
from = ["laptop"]
to = ["subnet:192.168.10.0/25"]
ports = ["tcp:5432"]

[[rule]]
from = ["home"]
to = ["srv"]
ports = ["tcp:80"]

[[rule]]
from = ["admin"]
to = ["srv"]
ports = ["any"]

[[rule]]
from = ["srv"]
to = ["laptop"]
ports = ["tcp:3000"]
`

func compile(t testing.TB, text string, self int) *Rules {
	t.Helper()
	b, err := peerbook.Parse("book.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile(b, mustKey(t, self))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeClock is the Options.Now of the timeout tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFilter(t testing.TB, rules string) (*Filter, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	return New(compile(t, testBook(rules), 1), Options{Now: clk.now}), clk
}

const (
	srv    = "10.42.0.1"
	srv6   = "fd42::1"
	laptop = "10.42.0.2"
	lap6   = "fd42::2"
	ci     = "10.42.0.3"
	phone  = "10.42.0.4"
	home   = "10.42.0.5"
	admin  = "10.42.0.6"
	adm6   = "fd42::6"
)

func TestDecisions(t *testing.T) {
	f, _ := newFilter(t, testRules)
	for _, c := range []struct {
		name string
		pkt  []byte
		want Verdict
		peer string
	}{
		{"group to group, tcp:22", tcp(laptop, 40000, srv, 22, tcpSYN), AcceptRule, "laptop"},
		{"port not listed", tcp(laptop, 40000, srv, 23, tcpSYN), DropNoRule, "laptop"},
		{"range, inside", tcp(laptop, 40000, srv, 8050, tcpSYN), AcceptRule, "laptop"},
		{"range, lower end", tcp(laptop, 40000, srv, 8000, tcpSYN), AcceptRule, "laptop"},
		{"range, upper end", tcp(laptop, 40000, srv, 8100, tcpSYN), AcceptRule, "laptop"},
		{"range, past the end", tcp(laptop, 40000, srv, 8101, tcpSYN), DropNoRule, "laptop"},
		{"udp port", udp(laptop, 40000, srv, 5000), AcceptRule, "laptop"},
		{"tcp rule is not udp", udp(laptop, 40000, srv, 22), DropNoRule, "laptop"},
		{"udp rule is not tcp", tcp(laptop, 40000, srv, 5000, tcpSYN), DropNoRule, "laptop"},
		{"icmp", ping(laptop, srv, 1), AcceptRule, "laptop"},
		{"icmpv6", ping(lap6, srv6, 1), AcceptRule, "laptop"},
		{"tcp over ipv6", tcp(lap6, 40000, srv6, 22, tcpSYN), AcceptRule, "laptop"},
		{"ipv6, port not listed", tcp(lap6, 40000, srv6, 25, tcpSYN), DropNoRule, "laptop"},
		{"member rule", tcp(ci, 40000, srv, 443, tcpSYN), AcceptRule, "ci"},
		{"member without icmp", ping(ci, srv, 1), DropNoRule, "ci"},
		{"member, other port", tcp(ci, 40000, srv, 22, tcpSYN), DropNoRule, "ci"},
		{"star", udp(phone, 40000, srv, 9999), AcceptRule, "phone"},
		{"star opens udp only", tcp(phone, 40000, srv, 9999, tcpSYN), DropNoRule, "phone"},
		{"any", tcp(admin, 1, srv, 31337, tcpSYN), AcceptRule, "admin"},
		{"any, unknown protocol", pk{src: admin, dst: srv, proto: 47}.bytes(), AcceptRule, "admin"},
		{"unknown protocol", pk{src: laptop, dst: srv, proto: 47}.bytes(), DropNoRule, "laptop"},
		{"any, ipv6 icmp", ping(adm6, srv6, 9), AcceptRule, "admin"},
		{"not a member", tcp("10.42.0.99", 40000, srv, 22, tcpSYN), DropNotMember, ""},
		{"own address is not a sender", tcp(srv, 40000, srv, 22, tcpSYN), DropNotMember, ""},
		{"mesh dns, udp", udp(phone, 40000, srv, 53), AcceptMeshService, "phone"},
		{"mesh dns, tcp", tcp(phone, 40000, srv, 53, tcpSYN), AcceptMeshService, "phone"},
		{"mesh dns, ipv6", udp(lap6, 40000, srv6, 53), AcceptMeshService, "laptop"},
		{"port 53 in the subnet is not mesh dns", udp(phone, 40000, "192.168.10.53", 53), DropNoRule, "phone"},
		{"group reaches the router's subnet", tcp(laptop, 40000, "192.168.10.200", 22, tcpSYN), AcceptRule, "laptop"},
		{"subnet: narrowing, inside", tcp(laptop, 40000, "192.168.10.5", 5432, tcpSYN), AcceptRule, "laptop"},
		{"subnet: narrowing, outside", tcp(laptop, 40000, "192.168.10.200", 5432, tcpSYN), DropNoRule, "laptop"},
		{"subnet: narrowing does not open the router", tcp(laptop, 40000, srv, 5432, tcpSYN), DropNoRule, "laptop"},
		{"from a member's LAN", tcp("192.168.50.7", 40000, srv, 80, tcpSYN), AcceptRule, "home"},
		{"from a member's LAN, other port", tcp("192.168.50.7", 40000, srv, 81, tcpSYN), DropNoRule, "home"},
		{"to another member", tcp(laptop, 40000, ci, 22, tcpSYN), DropNoRule, "laptop"},
		{"to outside our subnets", tcp(admin, 40000, "8.8.8.8", 53, tcpSYN), DropNoRule, "admin"},
		{"rule for another receiver", tcp(srv, 1, laptop, 3000, tcpSYN), DropNotMember, ""},
		{"fragment, sender limited to ports", pk{src: laptop, dst: srv, proto: protoUDP, fragOff: 185}.bytes(), DropFragment, "laptop"},
		{"fragment, sender with any", pk{src: admin, dst: srv, proto: protoUDP, fragOff: 185}.bytes(), AcceptRule, "admin"},
		{"ipv6 fragment, limited", pk{src: lap6, dst: srv6, proto: protoUDP, fragOff: 185}.bytes(), DropFragment, "laptop"},
		{"ipv6 fragment, any", pk{src: adm6, dst: srv6, proto: protoUDP, fragOff: 185}.bytes(), AcceptRule, "admin"},
		{"first fragment is judged by its ports", pk{src: laptop, dst: srv, proto: protoUDP, dport: 5000, moreFrags: true}.bytes(), AcceptRule, "laptop"},
		{"first fragment, port not listed", pk{src: laptop, dst: srv, proto: protoUDP, dport: 5001, moreFrags: true}.bytes(), DropNoRule, "laptop"},
		{"ipv6 first fragment", pk{src: lap6, dst: srv6, proto: protoTCP, dport: 22, moreFrags: true}.bytes(), AcceptRule, "laptop"},
		{"empty", nil, DropMalformed, ""},
		{"truncated tcp", tcp(laptop, 1, srv, 22, tcpSYN)[:30], DropMalformed, ""},
		{"not ip", []byte{0x20, 1, 2, 3}, DropMalformed, ""},
	} {
		got, peer := f.Inbound(c.pkt)
		if got != c.want || peer != c.peer {
			t.Errorf("%s: %v from %q, want %v from %q", c.name, got, peer, c.want, c.peer)
		}
		if got.Drop() != (c.want >= DropNoRule) {
			t.Errorf("%s: Drop() = %v", c.name, got.Drop())
		}
	}
}

// TestReceiverSide: a rule opens its to members only. The rule "srv may
// reach laptop on tcp:3000" lets laptop accept it, not srv.
func TestReceiverSide(t *testing.T) {
	r := compile(t, testBook(testRules), 2) // laptop
	f := New(r, Options{})
	if v, _ := f.Inbound(tcp(srv, 40000, laptop, 3000, tcpSYN)); v != AcceptRule {
		t.Errorf("laptop receiving tcp:3000 from srv: %v", v)
	}
	if v, _ := f.Inbound(tcp(ci, 40000, laptop, 3000, tcpSYN)); v != DropNoRule {
		t.Errorf("laptop receiving tcp:3000 from ci: %v", v)
	}
	if v, _ := f.Inbound(ping(srv, laptop, 1)); v != DropNoRule {
		t.Errorf("staff -> servers icmp opened the reverse: %v", v)
	}
}

func TestNoRulesAllowsEverything(t *testing.T) {
	f := New(compile(t, testBook(""), 1), Options{})
	if !f.Rules().Open() {
		t.Fatal("a book without rules is not open")
	}
	for _, p := range [][]byte{tcp(laptop, 1, srv, 23, tcpSYN), ping(ci, srv, 1), tcp("10.9.9.9", 1, srv, 1, 0), nil, {0xff}} {
		if v, peer := f.Inbound(p); v != AcceptOpen || peer != "" {
			t.Errorf("%x: %v %q", p, v, peer)
		}
		f.Outbound(p)
	}
	if n := f.Flows(); n != 1 {
		t.Errorf("%d flows tracked without rules, want 1 (the SYN sent)", n)
	}
	// Without rules, only the TCP connections this member opens are
	// noted, for a reload that brings the first rule.
	f.Outbound(tcp(srv, 1, ci, 22, tcpSYN))
	f.Outbound(tcp(srv6, 1, "fd42::3", 22, tcpSYN))
	f.Outbound(tcp(srv, 2, ci, 22, tcpSYN|tcpACK))
	f.Outbound(udp(srv, 3, ci, 22))
	if n := f.Flows(); n != 3 {
		t.Errorf("%d flows noted without rules, want 3: the SYNs only", n)
	}
	if v, _ := New(nil, Options{}).Inbound(nil); v != AcceptOpen {
		t.Errorf("New(nil): %v", v)
	}
}

func TestCompileNotMember(t *testing.T) {
	b, err := peerbook.Parse("book.toml", []byte(testBook(testRules)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(b, mustKey(t, 99)); err != ErrNotMember {
		t.Errorf("Compile for a stranger: %v", err)
	}
}

func TestStateful(t *testing.T) {
	f, _ := newFilter(t, testRules)
	expect := func(what string, pkt []byte, want Verdict) {
		t.Helper()
		if got, _ := f.Inbound(pkt); got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	// TCP: srv connects to ci:22, which no rule lets ci open towards srv.
	expect("unsolicited before", tcp(ci, 22, srv, 40000, tcpSYN|tcpACK), DropNoRule)
	f.Outbound(tcp(srv, 40000, ci, 22, tcpSYN))
	expect("syn-ack", tcp(ci, 22, srv, 40000, tcpSYN|tcpACK), AcceptTracked)
	f.Outbound(tcp(srv, 40000, ci, 22, tcpACK))
	expect("data", tcp(ci, 22, srv, 40000, tcpACK), AcceptTracked)
	expect("other local port", tcp(ci, 22, srv, 40001, tcpACK), DropNoRule)
	expect("other remote port", tcp(ci, 23, srv, 40000, tcpACK), DropNoRule)
	expect("reverse flow", tcp(ci, 40000, srv, 22, tcpSYN), DropNoRule)
	expect("other member, same ports", tcp(phone, 22, srv, 40000, tcpACK), DropNoRule)
	// A non-SYN segment does not start tracking: only a connection this
	// side opens does.
	f.Outbound(tcp(srv, 40002, ci, 22, tcpACK))
	expect("after an outbound ack", tcp(ci, 22, srv, 40002, tcpACK), DropNoRule)

	// UDP
	f.Outbound(udp(srv, 5353, phone, 7000))
	expect("udp reply", udp(phone, 7000, srv, 5353), AcceptTracked)
	expect("udp other port", udp(phone, 7001, srv, 5353), DropNoRule)
	// A UDP reply from a port a rule opens is carried by the rule, not
	// tracked, so that the flow ends with the rule.
	before := f.Flows()
	f.Outbound(udp(srv, 5000, laptop, 6000))
	if f.Flows() != before {
		t.Error("a reply from a port the rules open was tracked")
	}

	// ICMP echo
	f.Outbound(ping(srv, phone, 77))
	expect("echo reply", pong(phone, srv, 77), AcceptTracked)
	expect("echo reply, other id", pong(phone, srv, 78), DropNoRule)
	expect("echo request the other way", ping(phone, srv, 77), DropNoRule)
	f.Outbound(ping(srv6, "fd42::3", 5))
	expect("icmpv6 echo reply", pong("fd42::3", srv6, 5), AcceptTracked)
	expect("icmpv6 echo reply, other id", pong("fd42::3", srv6, 6), DropNoRule)

	// ICMP errors about a tracked flow, and about a rule-opened one.
	sent := udp(srv, 5353, phone, 7000)
	expect("port unreachable, tracked", unreachable(phone, srv, sent), AcceptTracked)
	f.Outbound(udp(srv6, 1, "fd42::3", 2))
	expect("icmpv6 unreachable, tracked", unreachable("fd42::3", srv6, udp(srv6, 1, "fd42::3", 2)), AcceptTracked)
	expect("icmpv6 unreachable, untracked", unreachable("fd42::3", srv6, udp(srv6, 9, "fd42::3", 2)), DropNoRule)
	expect("port unreachable, untracked", unreachable(phone, srv, udp(srv, 5354, phone, 7000)), DropNoRule)
	reply := tcp(srv, 443, ci, 40000, tcpACK) // srv answering ci's https
	expect("error about a rule-opened flow", unreachable(ci, srv, reply), AcceptTracked)
	expect("error about a flow no rule opens", unreachable(ci, srv, tcp(srv, 22, ci, 40000, tcpACK)), DropNoRule)

	// A host in srv's subnet talks to a member through srv.
	f.Outbound(tcp("192.168.10.9", 3333, phone, 80, tcpSYN))
	expect("reply to a subnet host", tcp(phone, 80, "192.168.10.9", 3333, tcpSYN|tcpACK), AcceptTracked)
	expect("unsolicited to a subnet host", tcp(phone, 80, "192.168.10.8", 3333, tcpSYN), DropNoRule)
}

func TestTimeouts(t *testing.T) {
	f, clk := newFilter(t, testRules)
	in := func(pkt []byte) Verdict { v, _ := f.Inbound(pkt); return v }
	to := DefaultTimeouts

	f.Outbound(udp(srv, 1000, phone, 7000))
	clk.advance(to.UDP - time.Second)
	if v := in(udp(phone, 7000, srv, 1000)); v != AcceptTracked {
		t.Errorf("udp before its timeout: %v", v)
	}
	clk.advance(to.UDP - time.Second) // refreshed by the reply
	if v := in(udp(phone, 7000, srv, 1000)); v != AcceptTracked {
		t.Errorf("udp refreshed by a reply: %v", v)
	}
	clk.advance(to.UDP + time.Second)
	if v := in(udp(phone, 7000, srv, 1000)); v != DropNoRule {
		t.Errorf("udp after its timeout: %v", v)
	}

	f.Outbound(tcp(srv, 2000, ci, 22, tcpSYN))
	clk.advance(to.TCPOpening + time.Second)
	if v := in(tcp(ci, 22, srv, 2000, tcpSYN|tcpACK)); v != DropNoRule {
		t.Errorf("syn-ack after the opening timeout: %v", v)
	}

	f.Outbound(tcp(srv, 2001, ci, 22, tcpSYN))
	if v := in(tcp(ci, 22, srv, 2001, tcpSYN|tcpACK)); v != AcceptTracked {
		t.Fatalf("syn-ack: %v", v)
	}
	clk.advance(to.TCPEstablished - time.Minute) // far beyond the opening timeout
	if v := in(tcp(ci, 22, srv, 2001, tcpACK)); v != AcceptTracked {
		t.Errorf("established, idle below its timeout: %v", v)
	}
	clk.advance(to.TCPEstablished + time.Second)
	if v := in(tcp(ci, 22, srv, 2001, tcpACK)); v != DropNoRule {
		t.Errorf("established after its timeout: %v", v)
	}

	f.Outbound(tcp(srv, 2002, ci, 22, tcpSYN))
	in(tcp(ci, 22, srv, 2002, tcpSYN|tcpACK))
	f.Outbound(tcp(srv, 2002, ci, 22, tcpFIN|tcpACK))
	clk.advance(to.TCPClosing - time.Second)
	if v := in(tcp(ci, 22, srv, 2002, tcpFIN|tcpACK)); v != AcceptTracked {
		t.Errorf("closing, within its timeout: %v", v)
	}
	clk.advance(to.TCPClosing + time.Second)
	if v := in(tcp(ci, 22, srv, 2002, tcpACK)); v != DropNoRule {
		t.Errorf("closing after its timeout: %v", v)
	}

	f.Outbound(ping(srv, phone, 3))
	clk.advance(to.ICMP + time.Second)
	if v := in(pong(phone, srv, 3)); v != DropNoRule {
		t.Errorf("echo reply after its timeout: %v", v)
	}
}

func TestSwap(t *testing.T) {
	f, _ := newFilter(t, testRules)
	in := func(pkt []byte) Verdict { v, _ := f.Inbound(pkt); return v }
	f.Outbound(tcp(srv, 40000, ci, 22, tcpSYN))
	f.Outbound(udp(srv, 1000, phone, 7000))
	f.Outbound(ping(srv, home, 1))

	// The same rules again: everything stays.
	f.Swap(compile(t, testBook(testRules), 1))
	if n := f.Flows(); n != 3 {
		t.Fatalf("%d flows after swapping in the same rules, want 3", n)
	}
	if v := in(tcp(ci, 22, srv, 40000, tcpSYN|tcpACK)); v != AcceptTracked {
		t.Errorf("tracked flow after an unchanged swap: %v", v)
	}

	// Staff lose ssh: an open ssh flow is cut at its next packet; the
	// tracked flows stay, their members are unchanged.
	fewer := strings.Replace(testRules, `"tcp:22", `, "", 1)
	f.Swap(compile(t, testBook(fewer), 1))
	if v := in(tcp(laptop, 40000, srv, 22, tcpACK)); v != DropNoRule {
		t.Errorf("ssh after the rule went: %v", v)
	}
	if v := in(tcp(laptop, 40000, srv, 8000, tcpACK)); v != AcceptRule {
		t.Errorf("the rest of the rule: %v", v)
	}
	if v := in(udp(phone, 7000, srv, 1000)); v != AcceptTracked {
		t.Errorf("tracked udp after the swap: %v", v)
	}

	// ci's address goes to a new member (a new key): its flow is
	// forgotten. phone leaves the book: its flow too.
	moved := strings.Replace(testBook(fewer), key(3), key(33), 1)
	moved = strings.Replace(moved, "name = \"phone\"\npublic_key = \""+key(4)+"\"\naddresses = [\"10.42.0.4\"]\n", "name = \"phone\"\npublic_key = \""+key(4)+"\"\naddresses = [\"10.42.0.40\"]\n", 1)
	f.Swap(compile(t, moved, 1))
	if n := f.Flows(); n != 1 {
		t.Errorf("%d flows after two members changed, want 1 (home's ping)", n)
	}
	if v := in(tcp(ci, 22, srv, 40000, tcpACK)); v != DropNoRule {
		t.Errorf("flow of the old ci with the new one: %v", v)
	}
	if v := in(pong(home, srv, 1)); v != AcceptTracked {
		t.Errorf("home's echo reply: %v", v)
	}

	// Rules all gone: open, nothing tracked.
	f.Swap(compile(t, testBook(""), 1))
	if n := f.Flows(); n != 0 || !f.Rules().Open() {
		t.Errorf("open rules, %d flows", n)
	}
	if v := in(tcp(ci, 1, srv, 1, tcpSYN)); v != AcceptOpen {
		t.Errorf("after swapping to no rules: %v", v)
	}
	// And back: TCP connections srv opened while there were no rules
	// survive the first rule; other flows from before it do not.
	f.Outbound(tcp(srv, 40005, ci, 22, tcpSYN))
	f.Outbound(tcp(srv, 40005, ci, 22, tcpACK))
	f.Outbound(udp(srv, 1001, phone, 7000))
	if v := in(tcp(ci, 22, srv, 40005, tcpSYN|tcpACK)); v != AcceptOpen {
		t.Fatalf("without rules: %v", v)
	}
	f.Swap(compile(t, testBook(testRules), 1))
	if v := in(tcp(ci, 22, srv, 40005, tcpACK)); v != AcceptTracked {
		t.Errorf("a connection srv opened before the first rule: %v", v)
	}
	if v := in(tcp(ci, 22, srv, 40000, tcpACK)); v != DropNoRule {
		t.Errorf("a connection forgotten by the swap to no rules: %v", v)
	}
	if v := in(udp(phone, 7000, srv, 1001)); v != DropNoRule {
		t.Errorf("udp from before the first rule: %v", v)
	}
	f.Outbound(udp(srv, 1001, phone, 7000)) // srv sends again: tracked now
	if v := in(udp(phone, 7000, srv, 1001)); v != AcceptTracked {
		t.Errorf("udp once srv sent again: %v", v)
	}
}

func TestConntrackBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	f := New(compile(t, testBook(testRules), 1), Options{MaxFlows: 64, Now: clk.now})
	for i := range 10000 {
		f.Outbound(udp(srv, uint16(1000+i), phone, 7000))
	}
	if n := f.Flows(); n > 64 {
		t.Errorf("%d flows in a table of 64", n)
	}
	// The newest flow is in: eviction makes room rather than refusing.
	if v, _ := f.Inbound(udp(phone, 7000, srv, uint16(1000+9999))); v != AcceptTracked {
		t.Errorf("newest flow: %v", v)
	}
}

func TestNoAllocations(t *testing.T) {
	f, _ := newFilter(t, testRules)
	f.Outbound(udp(srv, 1000, phone, 7000))
	for name, p := range map[string][]byte{
		"rule":      tcp(laptop, 40000, srv, 22, tcpACK),
		"rule v6":   tcp(lap6, 40000, srv6, 8050, tcpACK),
		"tracked":   udp(phone, 7000, srv, 1000),
		"drop":      tcp(ci, 40000, srv, 23, tcpSYN),
		"stranger":  tcp("10.42.9.9", 40000, srv, 23, tcpSYN),
		"subnet":    tcp("192.168.50.7", 40000, srv, 80, tcpSYN),
		"icmp err":  unreachable(phone, srv, udp(srv, 1000, phone, 7000)),
		"malformed": {0x45, 0},
	} {
		if n := testing.AllocsPerRun(200, func() { f.Inbound(p) }); n != 0 {
			t.Errorf("Inbound %s: %v allocations", name, n)
		}
	}
	out := udp(srv, 1000, phone, 7000)
	syn := tcp(srv, 40000, ci, 22, tcpSYN)
	if n := testing.AllocsPerRun(200, func() { f.Outbound(out); f.Outbound(syn) }); n != 0 {
		t.Errorf("Outbound: %v allocations", n)
	}
}

// TestConcurrentSwap runs the datapath against reloads, for the race
// detector.
func TestConcurrentSwap(t *testing.T) {
	f, _ := newFilter(t, testRules)
	a, b := compile(t, testBook(testRules), 1), compile(t, testBook(""), 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f.Outbound(udp(srv, uint16(g*1000+i%1000), phone, 7000))
				f.Inbound(udp(phone, 7000, srv, uint16(g*1000+i%1000)))
				f.Inbound(tcp(laptop, 1, srv, 22, tcpSYN))
			}
		}()
	}
	for i := range 200 {
		if i%2 == 0 {
			f.Swap(a)
		} else {
			f.Swap(b)
		}
	}
	close(stop)
	wg.Wait()
}

func TestVerdictStrings(t *testing.T) {
	for v, want := range map[Verdict]string{DropNoRule: "no-rule", DropNotMember: "not-a-member", DropFragment: "fragment", DropMalformed: "malformed", AcceptRule: "rule"} {
		if v.String() != want {
			t.Errorf("%d: %q, want %q", v, v.String(), want)
		}
	}
	_ = fmt.Sprint(Verdict(200))
}

// TestSYNIsNeverAReply: an inbound SYN on the ports of a tracked flow is a
// new connection the other side opens, which needs a rule.
func TestSYNIsNeverAReply(t *testing.T) {
	f, _ := newFilter(t, testRules)
	f.Outbound(tcp(srv, 40000, ci, 22, tcpSYN))
	if v, _ := f.Inbound(tcp(ci, 22, srv, 40000, tcpSYN)); v != DropNoRule {
		t.Errorf("a bare SYN matching a tracked flow: %v", v)
	}
	if v, _ := f.Inbound(tcp(ci, 22, srv, 40000, tcpSYN|tcpACK)); v != AcceptTracked {
		t.Errorf("the SYN-ACK: %v", v)
	}
}
