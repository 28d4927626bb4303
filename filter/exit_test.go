package filter

import (
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// exitBook is testBook with srv an exit member and exit rules.
func exitBook(rules string) string {
	return strings.Replace(testBook(rules), `groups = ["servers"]`, "groups = [\"servers\"]\nexit = true", 1)
}

const exitRules = `
[[rule]]
from = ["laptop"]
to = ["exit:srv"]
ports = ["tcp:443", "udp:53"]

[[rule]]
from = ["admin"]
to = ["exit:srv", "srv"]
ports = ["any"]

[[rule]]
from = ["*"]
to = ["*"]
ports = ["tcp:22"]
`

// TestExitRules: on the exit member, exit:NAME opens destinations outside
// the mesh for the members and ports the rule lists, and nothing else:
// naming the exit member (or "*") does not open it as an exit, and the
// mesh's own addresses are not outside.
func TestExitRules(t *testing.T) {
	f := New(compile(t, exitBook(exitRules), 1), Options{})
	for _, c := range []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"exit rule, port listed", tcp(laptop, 40000, "198.51.100.7", 443, tcpSYN), AcceptRule},
		{"exit rule, udp", udp(laptop, 40000, "198.51.100.7", 53), AcceptRule},
		{"exit rule, ipv6", tcp(lap6, 40000, "2001:db8::7", 443, tcpSYN), AcceptRule},
		{"exit rule, port not listed", tcp(laptop, 40000, "198.51.100.7", 80, tcpSYN), DropNoRule},
		{"exit rule does not open the exit member", tcp(laptop, 40000, srv, 443, tcpSYN), DropNoRule},
		{"to = * does not open the exit", tcp(ci, 40000, "198.51.100.7", 22, tcpSYN), DropNoRule},
		{"to = * still opens the member", tcp(ci, 40000, srv, 22, tcpSYN), AcceptRule},
		{"any through the exit", tcp(admin, 40000, "198.51.100.7", 25, tcpSYN), AcceptRule},
		{"mesh network is not outside", tcp(admin, 40000, "10.42.9.9", 25, tcpSYN), DropNoRule},
		{"another member is not outside", tcp(admin, 40000, ci, 25, tcpSYN), DropNoRule},
		{"another member's subnet is not outside", tcp(admin, 40000, "192.168.50.3", 25, tcpSYN), DropNoRule},
		{"from outside the mesh", tcp("198.51.100.7", 443, srv, 40000, tcpSYN), DropNotMember},
	} {
		if got, _ := f.Inbound(c.pkt); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// Another member compiles no exit: srv is not it.
	g := New(compile(t, exitBook(exitRules), 3), Options{})
	if got, _ := g.Inbound(tcp(laptop, 40000, "198.51.100.7", 443, tcpSYN)); got != DropNoRule {
		t.Errorf("ci forwards for laptop as an exit: %v", got)
	}
}

// TestExitClient: a member that sends traffic outside the mesh through
// exit member srv takes packets from outside the mesh as srv's: replies to
// its own flows pass, unsolicited ones are judged by srv's rules, and
// with no exit node (or one without exit = true) they are from no member.
func TestExitClient(t *testing.T) {
	b, err := peerbook.Parse("book.toml", []byte(exitBook(exitRules)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := CompileWithExit(b, mustKey(t, 2), "srv") // laptop
	if err != nil {
		t.Fatal(err)
	}
	f := New(r, Options{})
	f.Outbound(tcp(laptop, 40000, "198.51.100.7", 443, tcpSYN))
	if v, peer := f.Inbound(tcp("198.51.100.7", 443, laptop, 40000, tcpSYN|tcpACK)); v != AcceptTracked || peer != "srv" {
		t.Errorf("reply through the exit: %v from %q", v, peer)
	}
	if v, peer := f.Inbound(tcp("198.51.100.7", 443, laptop, 22, tcpSYN)); v != AcceptRule || peer != "srv" {
		t.Errorf("new flow from outside, judged as srv's (tcp:22 for all): %v from %q", v, peer)
	}
	if v, _ := f.Inbound(tcp("198.51.100.7", 443, laptop, 23, tcpSYN)); v != DropNoRule {
		t.Errorf("unsolicited from outside: %v", v)
	}
	if v, _ := f.Inbound(tcp("10.42.9.9", 443, laptop, 22, tcpSYN)); v != DropNotMember {
		t.Errorf("a mesh address of no member counts as the exit's: %v", v)
	}
	for _, exit := range []string{"", "ci", "nobody"} {
		r, err := CompileWithExit(b, mustKey(t, 2), exit)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := New(r, Options{}).Inbound(tcp("198.51.100.7", 443, laptop, 22, tcpSYN)); v != DropNotMember {
			t.Errorf("exit node %q: packet from outside: %v", exit, v)
		}
	}
}

// TestParseExitSelector: exit:NAME parses into SelectExit, prints back,
// and names its member only while it has exit = true.
func TestParseExitSelector(t *testing.T) {
	b, err := peerbook.Parse("book.toml", []byte(exitBook(exitRules)))
	if err != nil {
		t.Fatal(err)
	}
	s := b.Rules[0].To[0]
	if s.Kind != peerbook.SelectExit || s.Name != "srv" || s.String() != "exit:srv" {
		t.Fatalf("to[0] = %+v (%s)", s, s)
	}
	if got := b.Members(s); len(got) != 1 || b.Peers[got[0]].Name != "srv" {
		t.Errorf("members of exit:srv: %v", got)
	}
	b.Peers[0].Exit = false
	if got := b.Members(s); len(got) != 0 {
		t.Errorf("exit:srv without exit = true names %v", got)
	}
	_, err = peerbook.Parse("book.toml", []byte(testBook(exitRules)))
	if err == nil || !strings.Contains(err.Error(), `book.toml:41: rule #1: to "exit:srv": member "srv" (line 5) has no exit = true`) {
		t.Errorf("exit:NAME of a member without exit = true: %v", err)
	}
}
