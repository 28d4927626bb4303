package node

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestRelayWhenDirectFails: n1 and n2 are told to reach each other at a
// socket that swallows every packet, as two members behind symmetric NATs
// would be. After the relay wait they talk through n0, the relay, and both
// say so in their status.
func TestRelayWhenDirectFails(t *testing.T) {
	blackhole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blackhole.Close()
	hole := netip.MustParseAddrPort(blackhole.LocalAddr().String())

	book, keys := testBook(t, 3)
	book.Peers[0].Name, book.Peers[0].Relay = "relay", true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := startNodes(t, book, keys, nil, func(n *Node) { n.relayAfter = 2 * time.Second })
	final := *boundBook(book, nodes)
	// n1 and n2 get each other's endpoint wrong: straight into the hole.
	wrong := func(name string) *peerbook.Book {
		b := final
		b.Peers = append([]peerbook.Peer(nil), final.Peers...)
		for i := range b.Peers {
			if b.Peers[i].Name == name {
				b.Peers[i].Endpoint = peerbook.Endpoint{Host: hole.Addr().String(), Port: hole.Port()}
			}
		}
		return &b
	}
	if err := nodes[0].Reload(ctx, &final); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Reload(ctx, wrong("n2")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Reload(ctx, wrong("n1")); err != nil {
		t.Fatal(err)
	}
	// Both reach the relay.
	serveEcho(t, nodes[0], "relay")
	serveEcho(t, nodes[2], "n2")
	if err := checkTCP(ctx, nodes[1], "relay"); err != nil {
		t.Fatal(err)
	}
	if err := checkTCP(ctx, nodes[2], "relay"); err != nil {
		t.Fatal(err)
	}
	// n1 -> n2 works once both sides relay.
	if err := checkTCP(ctx, nodes[1], "n2"); err != nil {
		t.Fatalf("n1 -> n2 through the relay: %v", err)
	}
	for i, want := range map[int]string{1: "n2", 2: "n1"} {
		var path string
		for _, p := range nodes[i].Status().Peers {
			if p.Name == want {
				path = p.Path
			}
		}
		if path != "relayed via relay" {
			t.Errorf("n%d's path to %s is %q", i, want, path)
		}
	}
	if nodes[0].relay.relayedN.Load() == 0 {
		t.Error("the relay forwarded nothing")
	}
	for _, p := range nodes[0].Status().Peers {
		if p.Path != PathDirect {
			t.Errorf("relay's path to %s is %q", p.Name, p.Path)
		}
	}
	// n1's device routes n2's addresses through the relay.
	text, _ := nodes[1].dev.IpcGet()
	if !strings.Contains(text, "allowed_ip=10.42.0.3/32") {
		t.Fatalf("n2's address not routed at all:\n%s", redactKeys(text))
	}
}

func redactKeys(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "private_key=") {
			l = "private_key=(redacted)"
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
