package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestNetstackAsNobody runs two netstack members as uid 65534 with no
// capabilities, each in its own namespace, and moves 8 MiB through
// --forward/--expose byte-exact.
func TestNetstackAsNobody(t *testing.T) {
	needRoot(t, "ip", "setpriv")
	dir := t.TempDir()
	// Everything the unprivileged processes read lives in a directory they
	// own.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	os.Chown(dir, 65534, 65534)
	ms := newMembers(t, dir, "alpha", "beta")
	for _, m := range ms {
		os.Chown(m.KeyFile, 65534, 65534)
	}
	book := writeBook(t, dir, meshBook(ms))
	os.Chown(book, 65534, 65534)
	alpha, beta := ms[0], ms[1]

	// A server in beta's namespace on its loopback.
	payload := bytes.Repeat([]byte("wgmesh-nobody-"), 600_000) // 8.4 MB
	var ln net.Listener
	var err error
	beta.NS.Do(func() { ln, err = net.Listen("tcp", "127.0.0.1:8001") })
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) { c.Write(payload) })
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	alpha.startAs(t, nobody, book, "--mode", "netstack", "--forward", "tcp:127.0.0.1:8002=beta:80")
	beta.startAs(t, nobody, book, "--mode", "netstack", "--expose", "tcp:80=127.0.0.1:8001")

	// The processes really run unprivileged.
	for _, m := range ms {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.pid()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(status), "Uid:\t65534\t65534\t65534\t65534") || !strings.Contains(string(status), "CapEff:\t0000000000000000") {
			t.Fatalf("%s is not unprivileged:\n%s", m.Name, status)
		}
	}
	var got []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		var c net.Conn
		alpha.NS.Do(func() { c, err = net.DialTimeout("tcp", "127.0.0.1:8002", 5*time.Second) })
		if err == nil {
			c.SetDeadline(time.Now().Add(30 * time.Second))
			got, err = io.ReadAll(c)
			c.Close()
			if err == nil && len(got) == len(payload) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch through the mesh: %v (%d bytes)", err, len(got))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatal("payload corrupted")
	}
}

// pid is the wgmesh process id, below setpriv and ip netns exec, which
// exec rather than fork.
func (m *member) pid() int { return m.cmd.Process.Pid }

// startAs is start with the process run by setpriv with privArgs.
func (m *member) startAs(t *testing.T, privArgs []string, book string, args ...string) {
	t.Helper()
	argv := append([]string{"netns", "exec", m.NS.Name, "setpriv"}, privArgs...)
	argv = append(argv, wgmeshBin, "--log-level", "debug", "up", "--book", book, "--key", m.KeyFile, "--control", m.Control)
	argv = append(argv, args...)
	m.launch(t, exec.Command("ip", argv...))
}
