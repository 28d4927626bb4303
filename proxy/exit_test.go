package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// fakeResolver answers from a map and records the names it was asked.
type fakeResolver struct {
	names map[string][]netip.Addr
	asked []string
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.asked = append(f.asked, host)
	if a, ok := f.names[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// TestDestinationThroughExit: while an exit member carries traffic
// outside the mesh, addresses outside it pass and names outside the mesh's
// namespace are resolved with the resolver; member names and names under
// the mesh domain are never asked; host-local addresses and mesh
// addresses of no member stay refused. Without an exit (or once it is
// gone) outside destinations are refused, naming --exit-node, and no name
// is looked up.
func TestDestinationThroughExit(t *testing.T) {
	book := unitBook()
	res := &fakeResolver{names: map[string][]netip.Addr{
		"example.com": {netip.MustParseAddr("2001:db8::80"), netip.MustParseAddr("198.51.100.80")},
		"v6.example":  {netip.MustParseAddr("2001:db8::81")},
	}}
	exit := true
	rt := func() route { return routeOf(staticBook(book), nil, func() bool { return exit }, res) }
	for _, tc := range []struct{ host, want string }{
		{"198.51.100.7", "198.51.100.7:80"},
		{"2001:db8::7", "[2001:db8::7]:80"},
		{"example.com", "198.51.100.80:80"}, // IPv4 first
		{"v6.example", "[2001:db8::81]:80"},
		{"alpha", "10.42.0.1:80"},
		{"gamma", ""},           // a mesh name of no member: not asked
		{"gamma.corp.mesh", ""}, // under the mesh domain: not asked
		{"nxdomain.example", ""},
		{"127.0.0.1", ""},
		{"::", ""},
		{"fe80::1", ""},
		{"224.0.0.1", ""},
		{"10.42.0.9", ""}, // mesh network, no member
	} {
		got, err := rt().destination(context.Background(), tc.host, 80)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: %v, want a refusal", tc.host, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: %v, %v; want %s", tc.host, got, err, tc.want)
		}
	}
	want := []string{"example.com", "v6.example", "nxdomain.example"}
	if len(res.asked) != len(want) || res.asked[0] != want[0] || res.asked[1] != want[1] || res.asked[2] != want[2] {
		t.Errorf("asked the resolver %q, want %q", res.asked, want)
	}

	exit = false // the exit member left the book or lost exit = true
	res.asked = nil
	for _, host := range []string{"198.51.100.7", "example.com"} {
		_, err := rt().destination(context.Background(), host, 80)
		if err == nil {
			t.Errorf("%s passes without an exit", host)
		}
	}
	if _, err := rt().destination(context.Background(), "198.51.100.7", 80); err == nil || !strings.Contains(err.Error(), "--exit-node") {
		t.Errorf("refusal without an exit: %v", err)
	}
	if len(res.asked) != 0 {
		t.Errorf("asked the resolver %q without an exit", res.asked)
	}
}
