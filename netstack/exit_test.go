package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// hostNet stands for the exit member's host network: it records what the
// router dials and connects every dial to a loopback echo server.
type hostNet struct {
	tcp, udp netip.AddrPort
	mu       sync.Mutex
	dialed   []string
}

func (h *hostNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	h.mu.Lock()
	h.dialed = append(h.dialed, network+" "+address)
	h.mu.Unlock()
	to := h.tcp
	if network == "udp" {
		to = h.udp
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to.String())
}

func (h *hostNet) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.dialed)
}

// TestExitRouter: a router that is an exit (no subnets) forwards a
// member's flows to a destination outside the mesh through host sockets,
// and refuses, without dialing anything, destinations on its own host
// (loopback, link-local, its interface addresses), inside the mesh,
// multicast, flows from an address that is no member, and everything once
// SetExit(nil) turned the exit off.
func TestExitRouter(t *testing.T) {
	host := &hostNet{tcp: tcpEcho(t), udp: udpEcho(t)}
	hostAddr := netip.MustParseAddr("192.0.2.5")
	ex := &Exit{
		Mesh:      []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")},
		HostAddrs: func() ([]netip.Addr, error) { return []netip.Addr{hostAddr}, nil },
	}
	p := newRouterPair(t, func(r *SubnetRouter) {
		r.dial = host
		r.SetSubnets(nil)
		// memberB is no member: the book knows only a.
		r.SetMembers(map[string][]netip.Prefix{"a": {netip.PrefixFrom(memberA, 32)}})
		r.SetExit(ex)
	})
	outside := netip.MustParseAddrPort("198.51.100.7:80")
	if !p.tcpAnswered(t, memberA, outside) {
		t.Fatal("a member's TCP flow outside the mesh is not forwarded")
	}
	if c := p.dialUDP(t, memberA, netip.MustParseAddrPort("198.51.100.7:53")); !udpAnswered(c, []byte("q"), 3*time.Second) {
		t.Fatal("a member's UDP flow outside the mesh is not forwarded")
	}
	want := []string{"tcp 198.51.100.7:80", "udp 198.51.100.7:53"}
	if got := host.seen(); !slices.Equal(got, want) {
		t.Fatalf("dialed %q, want %q", got, want)
	}

	refused := []struct {
		src netip.Addr
		dst string
	}{
		{memberA, "127.0.0.1:80"},     // the host's loopback
		{memberA, "169.254.1.1:80"},   // link-local
		{memberA, "192.0.2.5:22"},     // an address of the host's interfaces
		{memberA, "10.99.0.200:80"},   // inside the mesh, no member
		{memberA, "224.0.0.251:5353"}, // multicast
		{memberB, "198.51.100.7:80"},  // from no member
	}
	for _, tc := range refused {
		dst := netip.MustParseAddrPort(tc.dst)
		if p.tcpAnswered(t, tc.src, dst) {
			t.Errorf("TCP %s -> %s forwarded", tc.src, dst)
		}
		if dst.Addr().IsMulticast() {
			continue // gVisor does not connect a UDP socket to a group
		}
		if c := p.dialUDP(t, tc.src, dst); udpAnswered(c, []byte("q"), 300*time.Millisecond) {
			t.Errorf("UDP %s -> %s forwarded", tc.src, dst)
		}
	}
	p.r.SetExit(nil)
	if p.tcpAnswered(t, memberA, outside) {
		t.Error("TCP forwarded after SetExit(nil)")
	}
	if got := host.seen(); !slices.Equal(got, want) {
		t.Fatalf("dialed %q, want only %q", got, want)
	}
}

// TestExitRefusal checks the policy itself, IPv6 and mapped addresses
// included, and that an unreadable host address list fails closed.
func TestExitRefusal(t *testing.T) {
	p := &exitPolicy{
		mesh:  []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("fd00:99::/64")},
		addrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("2001:db8::5")}, nil },
	}
	for a, refused := range map[string]bool{
		"198.51.100.7": false, "2001:db8::6": false,
		"127.0.0.1": true, "::1": true, "::ffff:127.0.0.1": true, "0.0.0.0": true, "::": true,
		"fe80::1": true, "169.254.0.9": true, "ff02::1": true, "255.255.255.255": true,
		"2001:db8::5": true, "10.99.3.4": true, "fd00:99::7": true,
	} {
		if got := p.refusal(netip.MustParseAddr(a)) != ""; got != refused {
			t.Errorf("%s: refused %v, want %v", a, got, refused)
		}
	}
	p.addrs = func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }
	if p.refusal(netip.MustParseAddr("198.51.100.7")) == "" {
		t.Error("forwarded without knowing the host's addresses")
	}
}

func TestCachedInterfaceAddrs(t *testing.T) {
	f := cachedInterfaceAddrs(time.Minute)
	a, err := f()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(a, netip.Addr.IsLoopback) {
		t.Errorf("no loopback among %v", a)
	}
}
