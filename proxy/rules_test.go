package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// unitBook is a book for tests that need no running mesh.
func unitBook() *peerbook.Book {
	return &peerbook.Book{
		Format: 1,
		Mesh: peerbook.Mesh{
			Domain:   "corp.mesh",
			Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
		},
		Peers: []peerbook.Peer{
			{Name: "alpha", Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1")}},
			{Name: "beta", Addresses: []netip.Addr{netip.MustParseAddr("fd42:42::2"), netip.MustParseAddr("10.42.0.2")},
				Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24"), netip.MustParsePrefix("fd99::/48")}},
			{Name: "v6only", Addresses: []netip.Addr{netip.MustParseAddr("fd42:42::3")}},
		},
	}
}

func staticBook(b *peerbook.Book) Book { return func() *peerbook.Book { return b } }

func TestDestinationRules(t *testing.T) {
	book := unitBook()
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	for _, tc := range []struct {
		host      string
		want      string // "" when refused
		notMember bool
	}{
		{"alpha", "10.42.0.1:80", false},
		{"ALPHA.corp.mesh", "10.42.0.1:80", false},
		{"alpha.corp.mesh.", "10.42.0.1:80", false},
		{"beta", "10.42.0.2:80", false}, // IPv4 preferred
		{"v6only", "[fd42:42::3]:80", false},
		{"10.42.0.2", "10.42.0.2:80", false},
		{"[fd42:42::2]", "[fd42:42::2]:80", false},
		{"::ffff:10.42.0.1", "10.42.0.1:80", false},
		{"192.168.7.200", "192.168.7.200:80", false}, // beta's subnet
		{"fd99::1", "[fd99::1]:80", false},
		{"203.0.113.9", "203.0.113.9:80", false}, // Allow
		{"10.42.0.9", "", false},                 // mesh network, no member
		{"192.168.8.1", "", false},
		{"127.0.0.1", "", false},
		{"fe80::1%eth0", "", false},
		{"example.com", "", false},
		{"alpha.mesh", "", false}, // wrong domain: not ours, not resolved
		{"gamma", "", true},
		{"gamma.corp.mesh", "", true},
	} {
		got, err := destination(book, allow, tc.host, 80)
		if tc.want == "" {
			var r *refusal
			if !errors.As(err, &r) || r.notMember != tc.notMember {
				t.Errorf("destination(%q) = %v, %v; want a refusal (notMember=%v)", tc.host, got, err, tc.notMember)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("destination(%q) = %v, %v; want %s", tc.host, got, err, tc.want)
		}
	}
	if _, err := destination(nil, nil, "alpha", 80); err == nil {
		t.Error("destination with no book succeeded")
	}
	// The book is read per call: a member added by a reload is reachable.
	book2 := unitBook()
	book2.Peers = append(book2.Peers, peerbook.Peer{Name: "gamma", Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.7")}})
	if got, err := destination(book2, nil, "gamma", 80); err != nil || got.String() != "10.42.0.7:80" {
		t.Errorf("after reload: %v, %v", got, err)
	}
}

func TestDialErrorReplies(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want byte
	}{
		{&net.OpError{Op: "dial", Err: errors.New("connection was refused")}, repConnectionRefused},
		{&net.OpError{Op: "dial", Err: errConnRefused}, repConnectionRefused},
		{errors.New("no route to host"), repHostUnreachable},
		{errors.New("network is unreachable"), repNetworkUnreachable},
		{context.DeadlineExceeded, repHostUnreachable},
		{errors.New("something else"), repGeneralFailure},
	} {
		if got := dialReply(tc.err); got != tc.want {
			t.Errorf("dialReply(%v) = %#x, want %#x", tc.err, got, tc.want)
		}
	}
}

func TestParseUDPRequest(t *testing.T) {
	b := udpRequest("beta", 7, "hi")
	host, port, data, err := parseUDPRequest(b)
	if err != nil || host != "beta" || port != 7 || string(data) != "hi" {
		t.Errorf("parse %x: %q %d %q %v", b, host, port, data, err)
	}
	b = udpRequest("fd42:42::2", 53, "")
	host, port, data, err = parseUDPRequest(b)
	if err != nil || host != "fd42:42::2" || port != 53 || len(data) != 0 {
		t.Errorf("parse %x: %q %d %q %v", b, host, port, data, err)
	}
	frag := udpRequest("beta", 7, "hi")
	frag[2] = 1
	for _, bad := range [][]byte{nil, {0, 0, 0}, frag, {0, 0, 0, 1, 10, 42}, {0, 0, 0, 7, 1, 2, 3, 4, 0, 1}} {
		if _, _, _, err := parseUDPRequest(bad); err == nil {
			t.Errorf("parse %x succeeded", bad)
		}
	}
}
