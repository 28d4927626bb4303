package node

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// failingResolver refuses every name, so a hostile hostname can only end
// up as "no endpoint".
type failingResolver struct{ asked []string }

func (r *failingResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.asked = append(r.asked, host)
	return nil, errors.New("no such host")
}

// uapiLine matches every line the writer may produce; values are hex keys,
// numbers, addresses and prefixes rendered by net/netip.
var uapiLine = regexp.MustCompile(`^(private_key=[0-9a-f]{64}|public_key=[0-9a-f]{64}|listen_port=\d+|replace_peers=true|update_only=true|remove=true|replace_allowed_ips=true|persistent_keepalive_interval=\d+|endpoint=[0-9a-f.:\[\]]+|allowed_ip=[0-9a-f.:]+/\d+)$`)

// TestUAPICannotBeInjected feeds book fields holding newlines and '=' (as a
// book that bypassed validation would) through the node and checks that
// the UAPI text stays line-for-line what the typed values say.
func TestUAPICannotBeInjected(t *testing.T) {
	book, keys := testBook(t, 2)
	hostile := "1.2.3.4:1\nallowed_ip=0.0.0.0/0\n\npublic_key=" + strings.Repeat("ab", 32)
	book.Peers[1].Name = "evil\nallowed_ip=0.0.0.0/0"
	book.Peers[1].Endpoint = peerbook.Endpoint{Host: hostile, Port: 51820}
	book.Mesh.Domain = "mesh\nreplace_peers=true"

	res := &failingResolver{}
	n, err := New(Config{Book: book, PrivateKey: keys[0], ListenPort: EphemeralPort, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := book.PeerByKey(keys[0].Public())
	n.ddns = map[peerbook.Key]*ddnsState{}
	resolved := n.recordResolved(book, n.resolveAll(context.Background(), n.hostnamesToResolve(book)))
	pc := n.peerConfig(book, self, &book.Peers[1], resolved)
	var w uapiWriter
	w.writePeer(pc, false)
	for _, line := range strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n") {
		if !uapiLine.MatchString(line) {
			t.Errorf("unexpected UAPI line %q", line)
		}
		if strings.Contains(line, "0.0.0.0/0") {
			t.Errorf("injected line %q", line)
		}
	}
	if pc.endpoint.IsValid() {
		t.Errorf("hostile endpoint produced %v", pc.endpoint)
	}

	// The running device agrees: only the book's allowed IPs, no endpoint.
	if err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	text, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var allowed []string
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "allowed_ip="); ok {
			allowed = append(allowed, v)
		}
		if strings.HasPrefix(line, "endpoint=") {
			t.Errorf("device got an endpoint: %q", line)
		}
	}
	if want := []string{"10.42.0.2/32", "fd42:42::2/128"}; strings.Join(allowed, " ") != strings.Join(want, " ") {
		t.Errorf("allowed IPs %v, want %v", allowed, want)
	}
	if len(res.asked) == 0 || res.asked[0] != hostile {
		t.Errorf("resolver asked %q", res.asked)
	}
}

func TestUAPIWriterRendersTypedValues(t *testing.T) {
	k, _ := peerbook.GeneratePrivateKey()
	pc := &peerConfig{
		key:        k.Public(),
		endpoint:   netip.MustParseAddrPort("[fd00::1]:51820"),
		keepalive:  25,
		allowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.0.2/32"), netip.MustParsePrefix("192.168.1.0/24")},
	}
	var w uapiWriter
	w.writePeer(pc, true)
	pub := pc.key
	want := "public_key=" + hexKey(pub) + "\nupdate_only=true\nendpoint=[fd00::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.42.0.2/32\nallowed_ip=192.168.1.0/24\n"
	if w.String() != want {
		t.Errorf("got\n%s\nwant\n%s", w.String(), want)
	}
}

func hexKey(k peerbook.Key) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range k {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}
