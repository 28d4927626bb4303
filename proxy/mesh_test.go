package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// testMesh starts alpha, beta and gamma on 127.0.0.1 with ephemeral ports:
// first with a book that has no endpoints, then, once every port is known,
// with the final book reloaded into every node, as an operator would
// publish it. beta routes 172.16.5.0/24.
type testMesh struct {
	book  *peerbook.Book
	nodes []*node.Node
}

var memberNames = []string{"alpha", "beta", "gamma"}

func newTestMesh(t testing.TB) *testMesh {
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
	for i, name := range memberNames {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		p := peerbook.Peer{
			Name:      name,
			PublicKey: k.Public(),
			Addresses: []netip.Addr{
				netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)}),
				netip.MustParseAddr(fmt.Sprintf("fd42:42::%x", i+1)),
			},
		}
		if name == "beta" {
			p.Subnets = []netip.Prefix{netip.MustParsePrefix("172.16.5.0/24")}
		}
		book.Peers = append(book.Peers, p)
	}
	m := &testMesh{book: book}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range memberNames {
		n, err := node.New(node.Config{Book: book, PrivateKey: keys[i], ListenPort: node.EphemeralPort})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		m.nodes = append(m.nodes, n)
	}
	final := *book
	final.Serial++
	final.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i, n := range m.nodes {
		port := n.Status().ListenPort
		final.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: port}
		final.Peers[i].ListenPort = port
	}
	for _, n := range m.nodes {
		if err := n.Reload(ctx, &final); err != nil {
			t.Fatal(err)
		}
	}
	m.book = &final
	return m
}

func (m *testMesh) alpha() *node.Node { return m.nodes[0] }
func (m *testMesh) beta() *node.Node  { return m.nodes[1] }

// serveBetaWeb serves "hello from beta: HOST PATH" on beta's port 80.
func (m *testMesh) serveBetaWeb(t testing.TB) {
	t.Helper()
	ln, err := m.beta().Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Proxy-Authorization") != "" || r.Header.Get("Proxy-Connection") != "" {
				http.Error(w, "proxy headers leaked", http.StatusTeapot)
				return
			}
			fmt.Fprintf(w, "hello from beta: %s %s", r.Host, r.URL.Path)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveBetaUDPEcho answers every datagram on beta's port 7 (IPv4 and
// IPv6) with "beta:" and the datagram.
func (m *testMesh) serveBetaUDPEcho(t testing.TB) {
	t.Helper()
	for _, a := range m.book.Peers[1].Addresses {
		pc, err := m.beta().ListenPacket("udp", netip.AddrPortFrom(a, 7).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("beta:"), buf[:n]...), from)
			}
		}()
	}
}

// needCurl returns the path of curl. Without it the test is skipped, or
// fails when CI is set: CI must run the tests against the real client.
func needCurl(t *testing.T) string {
	t.Helper()
	return testutil.Tool(t, "curl", "curl")
}

// runCurl runs curl with a clean environment (no proxy variables, no
// ~/.curlrc) and a bounded run time, and returns its output and error.
func runCurl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append([]string{"-q", "--silent", "--show-error", "--max-time", "20"}, args...)
	cmd := exec.CommandContext(ctx, needCurl(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// listenLoopback listens on 127.0.0.1 with an ephemeral port.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// forbiddenTarget is a host listener that fails the test if anything
// connects to it: destinations outside the mesh must be refused before the
// proxy dials.
func forbiddenTarget(t *testing.T) string {
	t.Helper()
	ln := listenLoopback(t)
	testutil.ServeConns(t, ln, func(net.Conn) { t.Errorf("the proxy connected to %s, outside the mesh", ln.Addr()) })
	return ln.Addr().String()
}
