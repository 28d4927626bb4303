package main

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

// runCLI runs the command line in-process and returns its exit code and
// output.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), append([]string{"wgmesh"}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// testMember is a member of the books the tests write.
type testMember struct {
	name    string
	key     peerbook.PrivateKey
	keyPath string
	addrs   []string
	port    uint16 // UDP port, 0 while unknown
}

func newMembers(t *testing.T, dir string, names ...string) []*testMember {
	t.Helper()
	var ms []*testMember
	for i, name := range names {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		m := &testMember{
			name:    name,
			key:     k,
			keyPath: filepath.Join(dir, name+".key"),
			addrs:   []string{"10.42.0." + string(rune('1'+i)), "fd42:42::" + string(rune('1'+i))},
		}
		if err := peerbook.WriteKeyFile(m.keyPath, k); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

// writeBook writes a valid book for members to path; members whose port is
// known get an endpoint on 127.0.0.1.
func writeBook(t *testing.T, path string, serial uint64, members []*testMember) {
	t.Helper()
	b := &peerbook.Book{
		Format: peerbook.CurrentFormat,
		Serial: serial,
		Mesh: peerbook.Mesh{
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
			PersistentKeepalive: 25,
		},
	}
	for _, m := range members {
		p := peerbook.Peer{Name: m.name, PublicKey: m.key.Public()}
		for _, a := range m.addrs {
			p.Addresses = append(p.Addresses, netip.MustParseAddr(a))
		}
		if m.port != 0 {
			p.Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: m.port}
		}
		b.Peers = append(b.Peers, p)
	}
	// Write and rename, so a node reloading on SIGHUP never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, peerbook.Marshal(b), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// badBook has an unknown key on line 3 and no members.
const badBook = "format = 1\nserial = 1\nbogus = true\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n"

func TestKeyInteropWithWG(t *testing.T) {
	wg, err := exec.LookPath("wg")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wg (wireguard-tools) is not installed; .ci/run installs it")
		}
		t.Skip("wg (wireguard-tools) not installed")
	}
	wgRun := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(wg, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("wg %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}

	code, priv, stderr := runCLI(t, "", "key", "generate")
	if code != 0 {
		t.Fatalf("key generate: exit %d: %s", code, stderr)
	}
	code, pub, stderr := runCLI(t, priv, "key", "public")
	if code != 0 {
		t.Fatalf("key public: exit %d: %s", code, stderr)
	}
	if want := wgRun(priv, "pubkey"); strings.TrimSpace(pub) != want {
		t.Errorf("public key of our key: wgmesh %q, wg %q", pub, want)
	}

	wgPriv := wgRun("", "genkey")
	code, pub, stderr = runCLI(t, wgPriv+"\n", "key", "public")
	if code != 0 {
		t.Fatalf("key public of a wg key: exit %d: %s", code, stderr)
	}
	if want := wgRun(wgPriv, "pubkey"); strings.TrimSpace(pub) != want {
		t.Errorf("public key of a wg key: wgmesh %q, wg %q", pub, want)
	}
}

func TestKeyGenerateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	code, pub, stderr := runCLI(t, "", "key", "generate", "--out", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	code, pub2, _ := runCLI(t, "", "key", "public", "--key", path)
	if code != 0 || pub2 != pub {
		t.Errorf("key public --key = %q (exit %d), want %q as printed by generate", pub2, code, pub)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(pub, strings.TrimSpace(string(data))) {
		t.Error("key generate --out printed the private key")
	}

	code, _, stderr = runCLI(t, "", "key", "generate", "--out", path)
	if code != 1 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "overwrite") {
		t.Errorf("second generate over the same file: exit %d, stderr %q; want a refusal naming the file", code, stderr)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Error("existing key file was changed")
	}
}

func TestKeyPublicRefusesOpenKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "open.key")
	k, _ := peerbook.GeneratePrivateKey()
	if err := os.WriteFile(path, []byte(k.Encode()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644) // whatever the umask
	code, _, stderr := runCLI(t, "", "key", "public", "--key", path)
	if code != 1 || !strings.Contains(stderr, "chmod 600 "+path) {
		t.Errorf("exit %d, stderr %q; want exit 1 and the chmod 600 fix", code, stderr)
	}
	if strings.Contains(stderr, k.Encode()) {
		t.Error("the error shows the private key")
	}
}

func TestBookCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "book.toml")
	writeBook(t, good, 7, newMembers(t, dir, "alpha", "beta"))
	code, out, stderr := runCLI(t, "", "book", "check", good)
	if code != 0 || !strings.Contains(out, "2 members") || !strings.Contains(out, "serial 7") {
		t.Errorf("good book: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(badBook), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, "", "book", "check", bad)
	if code != 1 || !strings.Contains(stderr, bad+":3: ") || !strings.Contains(stderr, "no members") {
		t.Errorf("bad book: exit %d, stderr %q; want every problem as FILE:LINE", code, stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n")[1:] {
		if !strings.HasPrefix(line, bad+":") {
			t.Errorf("problem line %q does not start with FILE:", line)
		}
	}
}

func TestBookExport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	writeBook(t, path, 1, ms)
	code, out, stderr := runCLI(t, "", "book", "export", "--peer", "alpha", path)
	if code != 0 || strings.Count(out, "[Peer]") != 2 || !strings.Contains(out, ms[1].key.Public().String()) {
		t.Fatalf("exit %d, stderr %q, output:\n%s", code, stderr, out)
	}
	if strings.Contains(out, ms[0].key.Encode()) {
		t.Error("export without --key printed the private key")
	}
	code, out, _ = runCLI(t, "", "book", "export", "--peer", "alpha", "--key", ms[0].keyPath, path)
	if code != 0 || !strings.Contains(out, "PrivateKey = "+ms[0].key.Encode()) {
		t.Errorf("export --key: exit %d, output:\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"key", "bogus"}, `unknown command "bogus"`},
		{[]string{"key", "generate", "--nope"}, "nope"},
		{[]string{"--log-level", "loud", "status"}, "--log-level"},
		{[]string{"book", "check"}, "FILE"},
		{[]string{"book", "export", "book.toml"}, "--peer"},
		{[]string{"up", "--key", "k"}, "--book"},
		{[]string{"up", "--book", "b", "--key", "k", "--mode", "bogus"}, "--mode"},
		{[]string{"up", "--book", "b", "--key", "k", "--listen-port", "70000"}, "--listen-port"},
		{[]string{"up", "--book", "b", "--key", "k", "--forward", "tcp:8080=beta:80"}, "--forward"},
		{[]string{"up", "--book", "b", "--key", "k", "--expose", "tcp:127.0.0.1:22=127.0.0.1:22"}, "--expose"},
	} {
		code, _, stderr := runCLI(t, "", tc.args...)
		if code != 2 || !strings.HasPrefix(stderr, "wgmesh: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("wgmesh %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}

func TestStatusWithoutNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	code, _, stderr := runCLI(t, "", "status", "--control", path)
	if code != 1 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "is `wgmesh up` running?") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestDemoCommand(t *testing.T) {
	code, out, stderr := runCLI(t, "", "--log-level", "warn", "demo")
	if code != 0 || !strings.Contains(out, "all 6 pairs talk") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

func TestDefaultControlPath(t *testing.T) {
	p := defaultControlPath()
	switch {
	case os.Geteuid() == 0:
		if p != "/run/wgmesh/wgmesh.sock" {
			t.Errorf("root: %s", p)
		}
	default:
		t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
		if p := defaultControlPath(); p != "/run/user/1000/wgmesh/wgmesh.sock" {
			t.Errorf("with XDG_RUNTIME_DIR: %s", p)
		}
		t.Setenv("XDG_RUNTIME_DIR", "")
		if p := defaultControlPath(); !strings.HasPrefix(p, os.TempDir()+"/wgmesh-") {
			t.Errorf("without XDG_RUNTIME_DIR: %s", p)
		}
	}
}
