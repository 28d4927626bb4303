package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

type fixedStatus node.Status

func (f fixedStatus) Status() node.Status { return node.Status(f) }

var sample = node.Status{
	Name:       "alpha",
	PublicKey:  "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo=",
	Addresses:  []netip.Addr{netip.MustParseAddr("10.42.0.1")},
	ListenPort: 51820,
	Mode:       "netstack",
	BookSerial: 3,
	Peers: []node.PeerStatus{{
		Name:           "beta",
		PublicKey:      "MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo=",
		Addresses:      []netip.Addr{netip.MustParseAddr("10.42.0.2"), netip.MustParseAddr("fd42:42::2")},
		Endpoint:       "127.0.0.1:40000",
		EndpointSource: "registry",
		Path:           "relayed via gamma",
		LastHandshake:  time.Unix(1700000000, 0).UTC(),
		RxBytes:        1536,
		TxBytes:        10 << 20,
	}},
}

func serve(t *testing.T, path string, src StatusSource) *Server {
	t.Helper()
	s, err := Serve(t.Context(), path, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestServeCreatesPrivateDirAndSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "wgmesh")
	path := filepath.Join(dir, "wgmesh.sock")
	s := serve(t, path, fixedStatus(sample))

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("socket directory mode = %04o, want 0700", got)
	}
	fi, err = os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a socket: %v", path, fi.Mode())
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode = %04o, want 0600", got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want the first result (nil)", err)
	}
}

func TestServeRefusesOpenDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := Serve(t.Context(), filepath.Join(dir, "wgmesh.sock"), fixedStatus(sample))
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("Serve in a 0777 directory: err = %v, want a refusal naming the directory and the fix", err)
	}
}

func TestServeRefusesForeignDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Serve(t.Context(), filepath.Join(dir, "wgmesh.sock"), fixedStatus(sample))
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("Serve in another user's directory: err = %v, want a refusal", err)
	}
}

func TestServeReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// A node that was killed leaves its socket file behind.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	serve(t, path, fixedStatus(sample))
	if _, err := NewClient(path).Status(t.Context()); err != nil {
		t.Fatalf("status after replacing the stale socket: %v", err)
	}
}

func TestServeRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	serve(t, path, fixedStatus(sample))

	_, err := Serve(t.Context(), path, fixedStatus(sample))
	if err == nil || !strings.Contains(err.Error(), "already serving") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Serve on a live socket: err = %v, want a refusal naming the path", err)
	}
	// The first server must be untouched.
	if _, err := NewClient(path).Status(t.Context()); err != nil {
		t.Fatalf("first server broken by the refused second one: %v", err)
	}
}

func TestServeRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(t.Context(), path, fixedStatus(sample)); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Serve over a regular file: err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("regular file was replaced")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := Serve(ctx, path, fixedStatus(sample)); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("socket still present 5s after the context was cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	serve(t, path, fixedStatus(sample))
	got, err := NewClient(path).Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sample) {
		t.Fatalf("status round trip:\n got %+v\nwant %+v", got, sample)
	}
}

// TestReportJSON: the document passed through is the one Report decodes,
// and an answer that is not a JSON object is refused, not printed.
func TestReportJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	serve(t, path, fixedStatus(sample))
	raw, err := NewClient(path).ReportJSON(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got node.Status
	if err := json.Unmarshal(raw, &got); err != nil || !reflect.DeepEqual(got, sample) {
		t.Fatalf("ReportJSON = %s (decode error %v), want the sample status", raw, err)
	}
	// Compact, as the node sent it: the CLI indents it for a terminal.
	if bytes.ContainsAny(raw, "\n") {
		t.Errorf("ReportJSON is not one compact line: %q", raw[max(0, len(raw)-10):])
	}

	bad := filepath.Join(t.TempDir(), "bad.sock")
	ln, err := net.Listen("unix", bad)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "<html>not a node</html>")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if raw, err := NewClient(bad).ReportJSON(t.Context()); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("ReportJSON from a socket that answers HTML = %q, %v; want an error naming the socket", raw, err)
	}
}

func TestClientWithoutNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nothing.sock")
	_, err := NewClient(path).Status(t.Context())
	if !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), path) {
		t.Fatalf("status with no node: err = %v, want ErrNoNode naming %s", err, path)
	}
}

// TestStatusHasNoPrivateKey runs a real node and reads the raw JSON the
// socket serves: neither a field about a private key nor the key itself may
// appear in it.
func TestStatusHasNoPrivateKey(t *testing.T) {
	keys := make([]peerbook.PrivateKey, 2)
	for i := range keys {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	text := fmt.Sprintf(`format = 1
serial = 1
[mesh]
networks = ["10.42.0.0/16"]
[[peer]]
name = "alpha"
public_key = %q
addresses = ["10.42.0.1"]
[[peer]]
name = "beta"
public_key = %q
addresses = ["10.42.0.2"]
endpoint = "127.0.0.1:9"
`, keys[0].Public().String(), keys[1].Public().String())
	book, err := peerbook.Parse("book.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{Book: book, PrivateKey: keys[0], ListenPort: node.EphemeralPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	path := filepath.Join(t.TempDir(), "wgmesh.sock")
	serve(t, path, n)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://wgmesh" + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), keys[0].Public().String()) {
		t.Fatalf("status does not show the node's public key; body:\n%s", body)
	}
	if strings.Contains(strings.ToLower(string(body)), "private") {
		t.Errorf("status JSON mentions a private field:\n%s", body)
	}
	for i, k := range keys {
		if strings.Contains(string(body), k.Encode()) {
			t.Errorf("status JSON contains private key %d", i)
		}
	}
}
