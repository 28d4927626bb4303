package integration

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/hostnet"
)

// TestTUNRouteOverlapRefused: a member's subnet that covers, or lies inside,
// a route the host already has through another interface is refused before
// anything is routed; the default route does not count.
func TestTUNRouteOverlapRefused(t *testing.T) {
	needRoot(t, "ip")
	ns := newNS(t, "routes")
	ns.Run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	ns.Run("ip", "link", "add", "mesh0", "type", "veth", "peer", "name", "mesh1")
	for _, l := range []string{"lan0", "lan1", "mesh0", "mesh1"} {
		ns.Run("ip", "link", "set", l, "up")
	}
	ns.Run("ip", "route", "add", "192.168.0.0/16", "dev", "lan0")
	ns.Run("ip", "route", "add", "10.1.0.0/16", "dev", "lan0")
	ns.Run("ip", "route", "add", "default", "dev", "lan0")
	ns.Run("ip", "-6", "route", "add", "2001:db8:7::/48", "dev", "lan0")

	tests := []struct {
		subnet string
		want   string // "" when the subnet may be routed
	}{
		{"192.168.0.0/16", "route 192.168.0.0/16 already exists via lan0;"},
		{"192.168.5.0/24", "route 192.168.5.0/24 already exists via lan0 (the host's route 192.168.0.0/16 overlaps it)"},
		{"10.0.0.0/8", "route 10.0.0.0/8 already exists via lan0 (the host's route 10.1.0.0/16 overlaps it)"},
		{"2001:db8::/32", "route 2001:db8::/32 already exists via lan0 (the host's route 2001:db8:7::/48 overlaps it)"},
		{"172.16.0.0/12", ""},
		{"10.2.0.0/16", ""},
	}
	ns.Do(func() {
		for _, tt := range tests {
			p := netip.MustParsePrefix(tt.subnet)
			a, err := hostnet.Apply(hostnet.Setup{Interface: "mesh0", Routes: []netip.Prefix{p}})
			var conflict *hostnet.RouteConflictError
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s: %v", p, err)
			case tt.want != "" && (!errors.As(err, &conflict) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("%s: err = %v, want a route conflict containing %q", p, err, tt.want)
			}
			if a != nil {
				if err := a.Undo(); err != nil {
					t.Errorf("undo %s: %v", p, err)
				}
			}
		}
	})
}

// TestTUNRouteOverlapNamesBookLine: `up` refuses a subnet that a host route
// covers, naming the book entry (FILE:LINE) that asks for it.
func TestTUNRouteOverlapNamesBookLine(t *testing.T) {
	needRoot(t, "ip")
	dir := t.TempDir()
	ns := newNS(t, "routes")
	ns.Run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	ns.Run("ip", "link", "set", "lan0", "up")
	ns.Run("ip", "route", "add", "192.168.0.0/16", "dev", "lan0")
	alpha, beta := newMember(t, dir, "alpha", ns), newMember(t, dir, "beta", ns)
	b := meshBook([]*member{alpha, beta})
	b.Peers[1].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.5.0/24")}
	book := writeBook(t, dir, b)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, wgmeshBin, "up", "--book", book, "--key", alpha.KeyFile,
		"--control", alpha.Control, "--mode", "tun", "--interface", alpha.IfName).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("up did not refuse the subnet (err %v):\n%s", err, out)
	}
	want := book + `:16: peer "beta": subnet 192.168.5.0/24: route 192.168.5.0/24 already exists via lan0 (the host's route 192.168.0.0/16 overlaps it)`
	if !strings.Contains(string(out), want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}
