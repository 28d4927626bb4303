package meshdns

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// newTestMesh starts alpha and beta on 127.0.0.1 with ephemeral ports:
// first with a book that has no endpoints, then, once every port is known,
// with the final book reloaded into both, as an operator would publish it.
func newTestMesh(t testing.TB) []*node.Node {
	t.Helper()
	book := &peerbook.Book{
		Format: 1,
		Source: "test.toml",
		Mesh: peerbook.Mesh{
			Domain:              "mesh",
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
			ListenPort:          51820,
			MTU:                 1420,
			PersistentKeepalive: 25,
		},
	}
	var keys []peerbook.PrivateKey
	for i, name := range []string{"alpha", "beta"} {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		book.Peers = append(book.Peers, peerbook.Peer{
			Name:      name,
			PublicKey: k.Public(),
			Addresses: []netip.Addr{
				netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)}),
				netip.MustParseAddr(fmt.Sprintf("fd42:42::%x", i+1)),
			},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nodes []*node.Node
	for i := range keys {
		n, err := node.New(node.Config{Book: book, PrivateKey: keys[i], ListenPort: node.EphemeralPort})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	final := *book
	final.Serial++
	final.Peers = slices.Clone(book.Peers)
	for i, n := range nodes {
		port := n.Status().ListenPort
		final.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: port}
		final.Peers[i].ListenPort = port
	}
	for _, n := range nodes {
		if err := n.Reload(ctx, &final); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// meshExchange sends q from alpha to beta's port 53 through the mesh,
// retrying over UDP while the first WireGuard handshake completes.
func meshExchange(t *testing.T, alpha *node.Node, network, server string, q *dns.Msg) *dns.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		c, err := alpha.Dial(ctx, network, server)
		if err != nil {
			t.Fatalf("dial %s %s through the mesh: %v", network, server, err)
		}
		co := &dns.Conn{Conn: c}
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if network == "tcp" {
			c.SetDeadline(time.Now().Add(10 * time.Second))
		}
		err = co.WriteMsg(q)
		var r *dns.Msg
		if err == nil {
			r, err = co.ReadMsg()
		}
		c.Close()
		if err == nil {
			return r
		}
		if network == "tcp" {
			t.Fatalf("tcp %s: %v", server, err)
		}
	}
	t.Fatalf("no DNS reply from %s over %s through the mesh", server, network)
	return nil
}

func TestServedInsideTheMesh(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("mesh", func(t *testing.T) {
		nodes := newTestMesh(t)
		alpha, beta := nodes[0], nodes[1]
		s := &Server{Book: beta.Book}
		errs := make(chan error, 3)
		// beta serves on each of its mesh addresses over UDP (a gVisor
		// UDP socket has one family) and on port 53 over TCP.
		for _, a := range []string{"10.42.0.2:53", "[fd42:42::2]:53"} {
			pc, err := beta.ListenPacket("udp", a)
			if err != nil {
				t.Fatal(err)
			}
			go func() { errs <- s.ServePacketConn(pc) }()
		}
		ln, err := beta.Listen("tcp", ":53")
		if err != nil {
			t.Fatal(err)
		}
		go func() { errs <- s.ServeListener(ln) }()

		for _, tc := range []struct {
			network, server, name string
			qtype                 uint16
			want                  []string
		}{
			{"udp", "beta:53", "alpha.mesh.", dns.TypeA, []string{"10.42.0.1"}},
			{"udp", "beta:53", "Beta.", dns.TypeAAAA, []string{"fd42:42::2"}},
			{"udp6", "beta:53", "alpha.", dns.TypeAAAA, []string{"fd42:42::1"}},
			{"udp", "10.42.0.2:53", "1.0.42.10.in-addr.arpa.", dns.TypePTR, []string{"alpha.mesh."}},
			{"tcp", "beta.mesh:53", "beta.mesh.", dns.TypeA, []string{"10.42.0.2"}},
		} {
			q := new(dns.Msg)
			q.SetQuestion(tc.name, tc.qtype)
			r := meshExchange(t, alpha, tc.network, tc.server, q)
			if got := answers(r); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, tc.want) {
				t.Errorf("%s %s %s %s: %s %v, want %v", tc.network, tc.server, tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], got, tc.want)
			}
		}
		q := new(dns.Msg)
		q.SetQuestion("nobody.mesh.", dns.TypeA)
		if r := meshExchange(t, alpha, "udp", "beta:53", q); r.Rcode != dns.RcodeNameError || !hasSOA(r, "mesh.") {
			t.Errorf("nobody.mesh through the mesh: %v", r)
		}

		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("serve on a mesh socket: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("serve on a mesh socket did not return after Close")
			}
		}
	})
	testutil.WaitGoroutines(t, base)
}
