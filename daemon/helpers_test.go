package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// mesh is a one-member book on disk with its key: enough for every part
// of the daemon to run (netstack mode, no root).
type mesh struct {
	dir, book, key string
	priv           peerbook.PrivateKey
	b              *peerbook.Book
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	dir := t.TempDir()
	priv, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{dir: dir, book: filepath.Join(dir, "book.toml"), key: filepath.Join(dir, "alpha.key"), priv: priv}
	if err := peerbook.WriteKeyFile(m.key, priv); err != nil {
		t.Fatal(err)
	}
	m.b = &peerbook.Book{Format: 1, Serial: 1, Mesh: peerbook.Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420, PersistentKeepalive: 25,
	}, Peers: []peerbook.Peer{{Name: "alpha", PublicKey: priv.Public(), Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.1")}}}}
	m.write(t)
	return m
}

// write saves the book, replacing the file as editors do.
func (m *mesh) write(t *testing.T) {
	t.Helper()
	tmp := m.book + ".tmp"
	if err := os.WriteFile(tmp, peerbook.Marshal(m.b), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, m.book); err != nil {
		t.Fatal(err)
	}
}

// addMember adds a member without an endpoint and raises the serial.
func (m *mesh) addMember(t *testing.T, name string, last byte) {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m.b.Serial++
	m.b.Peers = append(m.b.Peers, peerbook.Peer{Name: name, PublicKey: k.Public(), Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, last})}})
	m.write(t)
}

// config is a daemon of the mesh's member with every service on a port
// the system chooses, and a control socket.
func (m *mesh) config(t *testing.T) Config {
	return Config{
		Book:        m.book,
		KeyFile:     m.key,
		ControlPath: filepath.Join(m.dir, "run", "control.sock"),
		Metrics:     "127.0.0.1:0",
		SOCKS:       "127.0.0.1:0",
		HTTPProxy:   "127.0.0.1:0",
		DNS:         "127.0.0.1:0",
		Node:        node.Config{ListenPort: node.EphemeralPort},
		Logger:      testLogger(t),
	}
}

// start starts a daemon that is closed with the test.
func start(t *testing.T, cfg Config) *Daemon {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// testLogger logs into the test's log, shown when it fails.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
