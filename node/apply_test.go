package node

import (
	"context"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestDiffPeers runs the pure diff from applied to wanted member
// configurations against the UAPI transaction each case must produce,
// without a device or a socket.
func TestDiffPeers(t *testing.T) {
	key := func(b byte) peerbook.Key { var k peerbook.Key; k[0] = b; return k }
	hexk := func(b byte) string { k := key(b); return hex.EncodeToString(k[:]) }
	ap := netip.MustParseAddrPort
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range s {
			out = append(out, netip.MustParsePrefix(p))
		}
		return out
	}
	pc := func(b byte, ep string, ka uint16, allowed ...string) *peerConfig {
		c := &peerConfig{name: string('a' + b), key: key(b), keepalive: ka, allowedIPs: pfx(allowed...)}
		c.own = c.allowedIPs
		if ep != "" {
			c.endpoint = ap(ep)
		}
		return c
	}
	set := func(cs ...*peerConfig) map[peerbook.Key]*peerConfig {
		m := map[peerbook.Key]*peerConfig{}
		for _, c := range cs {
			m[c.key] = c
		}
		return m
	}
	order := func(bs ...byte) []peerbook.Peer {
		var out []peerbook.Peer
		for _, b := range bs {
			out = append(out, peerbook.Peer{PublicKey: key(b)})
		}
		return out
	}
	lines := func(ls ...string) string {
		if len(ls) == 0 {
			return ""
		}
		return strings.Join(ls, "\n") + "\n"
	}
	for _, tc := range []struct {
		name          string
		applied, want map[peerbook.Key]*peerConfig
		order         []peerbook.Peer
		tx            string
	}{{
		name:    "nothing changes",
		applied: set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		want:    set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		order:   order(1),
		tx:      "",
	}, {
		name:  "added in book order",
		want:  set(pc(2, "127.0.0.1:2", 0, "10.0.0.2/32"), pc(1, "", 0, "10.0.0.1/32")),
		order: order(2, 1),
		tx: lines("public_key="+hexk(2), "endpoint=127.0.0.1:2", "persistent_keepalive_interval=0",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.2/32",
			"public_key="+hexk(1), "persistent_keepalive_interval=0", "replace_allowed_ips=true", "allowed_ip=10.0.0.1/32"),
	}, {
		name:    "removed by key, before additions",
		applied: set(pc(9, "", 0), pc(3, "", 0)),
		want:    set(pc(4, "", 0)),
		order:   order(4),
		tx: lines("public_key="+hexk(3), "update_only=true", "remove=true",
			"public_key="+hexk(9), "update_only=true", "remove=true",
			"public_key="+hexk(4), "persistent_keepalive_interval=0", "replace_allowed_ips=true"),
	}, {
		name:    "endpoint moves: the whole entry, update only",
		applied: set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		want:    set(pc(1, "127.0.0.1:7", 25, "10.0.0.1/32")),
		order:   order(1),
		tx: lines("public_key="+hexk(1), "update_only=true", "endpoint=127.0.0.1:7", "persistent_keepalive_interval=25",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.1/32"),
	}, {
		// Only the allowed IPs: an endpoint the device learnt from the
		// member's packets (roaming) stays.
		name:    "routes move to a relay",
		applied: set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32"), pc(2, "127.0.0.1:2", 25, "10.0.0.2/32")),
		want:    set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32", "10.0.0.2/32"), pc(2, "127.0.0.1:2", 25)),
		order:   order(1, 2),
		tx: lines("public_key="+hexk(1), "update_only=true",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.1/32", "allowed_ip=10.0.0.2/32",
			"public_key="+hexk(2), "update_only=true", "replace_allowed_ips=true"),
	}, {
		name:    "endpoint and routes change together: the whole entry",
		applied: set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		want:    set(pc(1, "127.0.0.1:7", 25, "10.0.0.1/32", "10.0.0.2/32")),
		order:   order(1),
		tx: lines("public_key="+hexk(1), "update_only=true", "endpoint=127.0.0.1:7", "persistent_keepalive_interval=25",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.1/32", "allowed_ip=10.0.0.2/32"),
	}, {
		name:    "keepalive turned on with a first endpoint",
		applied: set(pc(1, "", 0, "10.0.0.1/32")),
		want:    set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		order:   order(1),
		tx: lines("public_key="+hexk(1), "update_only=true", "endpoint=127.0.0.1:1", "persistent_keepalive_interval=25",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.1/32"),
	}, {
		name:    "endpoint becomes unknown: not unset",
		applied: set(pc(1, "127.0.0.1:1", 25, "10.0.0.1/32")),
		want:    set(pc(1, "", 0, "10.0.0.1/32")),
		order:   order(1),
		tx: lines("public_key="+hexk(1), "update_only=true", "persistent_keepalive_interval=0",
			"replace_allowed_ips=true", "allowed_ip=10.0.0.1/32"),
	}, {
		name:  "wanted but not in the book order: not added",
		want:  set(pc(1, "", 0)),
		order: order(),
		tx:    "",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotConfigs(tc.applied, tc.want)
			d := diffPeers(tc.applied, tc.want, tc.order)
			if got := d.transaction(); got != tc.tx {
				t.Errorf("transaction:\n%s\nwant:\n%s", got, tc.tx)
			}
			if d.empty() != (tc.tx == "") {
				t.Errorf("empty() = %v for transaction %q", d.empty(), tc.tx)
			}
			if after := snapshotConfigs(tc.applied, tc.want); after != before {
				t.Errorf("diffPeers changed its input:\n%s\n->\n%s", before, after)
			}
			// One member's change (an endpoint from DNS or a registry)
			// renders as the same entry the whole-book diff writes.
			if len(tc.order) == 1 && len(tc.applied) == 1 && len(tc.want) == 1 {
				k := tc.order[0].PublicKey
				if from, to := tc.applied[k], tc.want[k]; from != nil && to != nil {
					one := diffOne(from, to)
					if got := one.transaction(); got != tc.tx {
						t.Errorf("diffOne transaction:\n%s\nwant:\n%s", got, tc.tx)
					}
				}
			}
		})
	}
}

// snapshotConfigs renders configuration maps for a change check.
func snapshotConfigs(ms ...map[peerbook.Key]*peerConfig) string {
	var b strings.Builder
	for _, m := range ms {
		keys := make([]peerbook.Key, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b peerbook.Key) int { return strings.Compare(string(a[:]), string(b[:])) })
		for _, k := range keys {
			c := m[k]
			b.WriteString(c.name + " " + c.endpoint.String())
			for _, p := range c.allowedIPs {
				b.WriteString(" " + p.String())
			}
			b.WriteString("\n")
		}
		b.WriteString("--\n")
	}
	return b.String()
}

// TestReadersDoNotWaitForTheLoop holds the node's loop busy (as a slow
// apply would) and checks that Status, Book, Dial and InterfaceName still
// answer at once, from what the loop published, and that the loop then
// goes on with the next event.
func TestReadersDoNotWaitForTheLoop(t *testing.T) {
	book, keys := testBook(t, 2)
	n := startNodes(t, book, keys[:1], nil, nil)[0]
	release := make(chan struct{})
	busy := make(chan struct{})
	go n.do(func() { close(busy); <-release })
	<-busy

	done := make(chan string, 4)
	go func() {
		st := n.Status()
		done <- "status " + st.Name
		done <- "book " + n.Book().Peers[0].Name
		_ = n.InterfaceName()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := n.Dial(ctx, "udp", "n1:9")
		if err == nil {
			c.Close()
		}
		done <- "dial"
	}()
	for _, want := range []string{"status n0", "book n0", "dial"} {
		select {
		case got := <-done:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waited for the busy loop", want)
		}
	}
	close(release)
	ran := make(chan struct{})
	go func() { n.do(func() {}); close(ran) }()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not take the next event")
	}
}

// TestReloadAfterClose: a Reload after Close returns an
// error wrapping net.ErrClosed instead of waiting for a loop that ended.
func TestReloadAfterClose(t *testing.T) {
	book, keys := testBook(t, 2)
	n := startNodes(t, book, keys[:1], nil, nil)[0]
	n.Close()
	if ran := n.do(func() {}); ran {
		t.Error("an event ran after Close")
	}
	if err := n.Reload(context.Background(), book); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Reload after Close: %v", err)
	}
}
