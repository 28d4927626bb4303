package main

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
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
	host    string // endpoint host when port is known; "" means 127.0.0.1
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
	// Write and rename, so a node reloading on SIGHUP never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, bookText(serial, members), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// bookText is the text of a valid book for members.
func bookText(serial uint64, members []*testMember) []byte {
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
			if m.host != "" {
				p.Endpoint.Host = m.host
			}
		}
		b.Peers = append(b.Peers, p)
	}
	return peerbook.Marshal(b)
}

// badBook has an unknown key on line 3 and no members.
const badBook = "format = 1\nserial = 1\nbogus = true\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n"

func TestKeyInteropWithWG(t *testing.T) {
	wg := testutil.Tool(t, "wg", "wireguard-tools")
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
		{[]string{"book", "export", "book.toml"}, "book export needs --peer NAME"},
		{[]string{"up", "--key", "k"}, "--book"},
		{[]string{"up", "--book", "b", "--key", "k", "--mode", "bogus"}, "--mode"},
		{[]string{"up", "--book", "b", "--key", "k", "--listen-port", "70000"}, "--listen-port"},
		{[]string{"up", "--book", "b", "--key", "k", "--forward", "tcp:8080=beta:80"}, "--forward"},
		{[]string{"up", "--book", "b", "--key", "k", "--expose", "tcp:127.0.0.1:22=127.0.0.1:22"}, "--expose"},
		{[]string{"up", "--book", "b", "--key", "k", "--resolver", "dns.example"}, "--resolver"},
		{[]string{"up", "--book", "b", "--key", "k", "--resolver", "127.0.0.1:0"}, "--resolver"},
		{[]string{"up", "--book", "b", "--key", "k", "--metrics", "localhost:http"}, "--metrics"},
		{[]string{"up", "--book", "b", "--key", "k", "--metrics", "70000"}, "--metrics"},
		{[]string{"up", "--book", "b", "--key", "k", "--socks", "example.com:1080"}, "--socks"},
		{[]string{"up", "--book", "b", "--key", "k", "--dns", "127.0.0.1"}, "--dns"},
		{[]string{"up", "--book", "b", "--key", "k", "--socks", "1080", "--proxy-allow", "192.168.1.1"}, "--proxy-allow"},
		{[]string{"up", "--book", "b", "--key", "k", "--socks", "1080", "--proxy-allow", "192.168.1.1/24"}, "192.168.1.0/24"},
		{[]string{"up", "--book", "b", "--key", "k", "--proxy-allow", "10.0.0.0/8"}, "--socks or --http-proxy"},
		{[]string{"up", "--book", "b", "--key", "k", "--socks-auth-file", "auth"}, "--socks or --http-proxy"},
		{[]string{"up", "--book", "http://192.0.2.1/book.toml", "--key", "k"}, "--allow-http"},
		{[]string{"up", "--book", "ftp://192.0.2.1/book.toml", "--key", "k"}, "https://"},
		{[]string{"up", "--book", "b", "--key", "k", "--book-poll", "10s"}, "--book-poll applies to a --book URL"},
		{[]string{"up", "--book", "https://192.0.2.1/b", "--key", "k", "--book-poll", "0s"}, "--book-poll"},
		{[]string{"up", "--book", "b", "--key", "k", "--resolve-interval", "-1s"}, "--resolve-interval"},
		{[]string{"book", "sign", "book.toml"}, "book sign needs --key SSH_PRIVATE_KEY"},
		{[]string{"book", "verify", "book.toml"}, "book verify needs --trusted-signers FILE"},
		{[]string{"book", "import"}, "FILE.conf"},
		{[]string{"book", "add", "book.toml"}, "book add needs --name NAME"},
		{[]string{"book", "remove", "book.toml"}, "book remove needs --name NAME"},
		{[]string{"book", "set", "book.toml"}, "book set needs --name NAME"},
		{[]string{"invite", "book.toml"}, "invite needs --name NAME"},
		{[]string{"join", "x.invite"}, "join needs --out DIR"},
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

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		"9100":           "127.0.0.1:9100",
		"0":              "127.0.0.1:0",
		"127.0.0.1:1080": "127.0.0.1:1080",
		":9100":          ":9100",
		"[::1]:53":       "[::1]:53",
		"localhost:53":   "localhost:53",
	} {
		if got, err := listenAddr("--metrics", in); err != nil || got != want {
			t.Errorf("listenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestProxyRefusesOpenBind: a proxy on a reachable address without
// authentication is refused before anything starts.
func TestProxyRefusesOpenBind(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	for _, tc := range [][]string{
		{"--socks", "0.0.0.0:1080"},
		{"--http-proxy", "0.0.0.0:8080"},
	} {
		args := append([]string{"up", "--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock")}, tc...)
		code, _, stderr := runCLI(t, "", args...)
		if code != 1 || !strings.Contains(stderr, tc[0]) || !strings.Contains(stderr, "--socks-auth-file") || !strings.Contains(stderr, tc[1]) {
			t.Errorf("up %v: exit %d, stderr %q; want exit 1 naming %s, --socks-auth-file and the address", tc, code, stderr, tc[0])
		}
	}
}

func TestBookImport(t *testing.T) {
	files, err := filepath.Glob("testdata/wgquick/hub-spoke/*.conf")
	if err != nil || len(files) == 0 {
		t.Fatalf("no wg-quick files: %v", err)
	}
	want, err := os.ReadFile("testdata/wgquick/hub-spoke.book.golden")
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "", append([]string{"book", "import"}, files...)...)
	if code != 0 || out != string(want) {
		t.Fatalf("book import: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, stderr, out, want)
	}
	if !strings.Contains(stderr, "note: ") {
		t.Errorf("no notes on stderr: %q", stderr)
	}

	path := filepath.Join(t.TempDir(), "book.toml")
	code, out, stderr = runCLI(t, "", append([]string{"book", "import", "--out", path}, files...)...)
	if code != 0 || !strings.Contains(out, path+": 3 members") {
		t.Fatalf("book import --out: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if got, _ := os.ReadFile(path); string(got) != string(want) {
		t.Errorf("--out wrote:\n%s", got)
	}
	code, _, stderr = runCLI(t, "", append([]string{"book", "import", "--out", path}, files...)...)
	if code != 1 || !strings.Contains(stderr, "overwrite") {
		t.Errorf("second import over the same file: exit %d, stderr %q", code, stderr)
	}

	// Something a book cannot express is refused with the reason.
	psk := filepath.Join(t.TempDir(), "psk.conf")
	k1, _ := peerbook.GeneratePrivateKey()
	k2, _ := peerbook.GeneratePrivateKey()
	conf := "[Interface]\nPrivateKey = " + k1.Encode() + "\nAddress = 10.9.0.1/24\n\n[Peer]\nPublicKey = " + k2.Public().String() +
		"\nPresharedKey = " + k2.Encode() + "\nAllowedIPs = 10.9.0.2/32\n"
	if err := os.WriteFile(psk, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCLI(t, "", "book", "import", psk)
	if code != 1 || out != "" || !strings.Contains(stderr, psk+":") || !strings.Contains(stderr, "PresharedKey") {
		t.Errorf("import with a PresharedKey: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestBookSignRefusesInvalidBook(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(badBook), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	sshKeygen(t, "", "-q", "-t", "ed25519", "-N", "", "-f", key)
	code, _, stderr := runCLI(t, "", "book", "sign", "--key", key, bad)
	if code != 1 || !strings.Contains(stderr, bad+":3: ") {
		t.Errorf("signing an invalid book: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(bad + ".sig"); err == nil {
		t.Error("a signature was written for an invalid book")
	}
}
