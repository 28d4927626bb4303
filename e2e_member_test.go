package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// End-to-end tests of the membership commands with the real binary: book
// add/remove/set, invite and join, and export --qr, against running nodes.

// cli runs the wgmesh binary and remembers everything it printed, so that a
// test can check at the end that no private key ever appeared.
type cliRunner struct {
	t   *testing.T
	bin string
	all *testutil.Buffer
}

func newCLI(t *testing.T) *cliRunner {
	return &cliRunner{t: t, bin: buildBinary(t), all: &testutil.Buffer{}}
}

// in is r for a subtest.
func (r *cliRunner) in(t *testing.T) *cliRunner {
	return &cliRunner{t: t, bin: r.bin, all: r.all}
}

func (r *cliRunner) run(args ...string) (code int, stdout, stderr string) {
	r.t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		r.t.Fatalf("wgmesh %v: %v", args, err)
	}
	r.all.Write(out.Bytes())
	r.all.Write(errOut.Bytes())
	return code, out.String(), errOut.String()
}

// ok runs a command that must succeed and returns its stdout.
func (r *cliRunner) ok(args ...string) string {
	r.t.Helper()
	code, out, errOut := r.run(args...)
	if code != 0 {
		r.t.Fatalf("wgmesh %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// refused runs a command that must exit 1 with want in its error and leave
// the files byte-identical.
func (r *cliRunner) refused(want string, files []string, args ...string) {
	r.t.Helper()
	before := make([][]byte, len(files))
	for i, f := range files {
		before[i], _ = os.ReadFile(f)
	}
	code, out, errOut := r.run(args...)
	if code != 1 || !strings.Contains(errOut, want) {
		r.t.Errorf("wgmesh %s: exit %d, stderr %q; want exit 1 and %q (stdout %q)", strings.Join(args, " "), code, errOut, want, out)
	}
	for i, f := range files {
		if now, _ := os.ReadFile(f); !bytes.Equal(now, before[i]) {
			r.t.Errorf("wgmesh %s changed %s", strings.Join(args, " "), f)
		}
	}
}

// noPrivateKeys fails if any private key of keyFiles appeared in what the
// commands printed or in the logs of procs.
func (r *cliRunner) noPrivateKeys(keys []string, procs ...*proc) {
	r.t.Helper()
	all := r.all.String()
	for _, p := range procs {
		all += p.stderr.String()
	}
	for _, k := range keys {
		if strings.Contains(all, k) {
			r.t.Errorf("a private key (%s…) appeared in an output", k[:4])
		}
	}
}

func readKey(t *testing.T, path string) string {
	t.Helper()
	k, err := peerbook.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k.Encode()
}

func loadTestBook(t *testing.T, path string) *peerbook.Book {
	t.Helper()
	b, err := peerbook.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBookAddAllocatesAndRefuses(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	key := func(n string) string { return filepath.Join(dir, n+".key") }

	// A new book: /29 has 6 host addresses (.1-.6; .0 network, .7
	// broadcast); /125 has 7 (::1-::7; IPv6 has no broadcast address).
	out := w.ok("book", "add", "--network", "10.42.7.0/29", "--network", "fd42:7::/125", "--name", "a", "--new-key", key("a"), book)
	if !strings.Contains(out, "added a: 10.42.7.1, fd42:7::1\n") {
		t.Errorf("first add printed %q", out)
	}
	for i, n := range []string{"b", "c", "d"} {
		out := w.ok("book", "add", "--name", n, "--new-key", key(n), book)
		if want := fmt.Sprintf("added %s: 10.42.7.%d, fd42:7::%d\n", n, i+2, i+2); !strings.Contains(out, want) {
			t.Errorf("add %s printed %q, want %q", n, out, want)
		}
	}
	w.ok("book", "remove", "--name", "b", book)
	// The hole b left is reused first.
	if out := w.ok("book", "add", "--name", "e", "--new-key", key("e"), book); !strings.Contains(out, "added e: 10.42.7.2, fd42:7::2\n") {
		t.Errorf("add after a removal printed %q, want b's old addresses", out)
	}
	w.ok("book", "add", "--name", "f", "--new-key", key("f"), book)
	// An explicit address overrides the allocation in its network only.
	if out := w.ok("book", "add", "--name", "g", "--new-key", key("g"), "--address", "10.42.7.6", book); !strings.Contains(out, "added g: 10.42.7.6, fd42:7::6\n") {
		t.Errorf("add with --address printed %q", out)
	}
	b := loadTestBook(t, book)
	if b.Serial != 8 || len(b.Peers) != 6 {
		t.Errorf("after 8 changes: serial %d, %d members; want serial 8, 6 members", b.Serial, len(b.Peers))
	}
	for _, p := range b.Peers {
		k := readKey(t, key(p.Name))
		pk, _ := peerbook.ParsePrivateKey(k)
		if pk.Public() != p.PublicKey {
			t.Errorf("member %s: book key is not the key in %s", p.Name, key(p.Name))
		}
		if fi, err := os.Stat(key(p.Name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", key(p.Name), fi.Mode(), err)
		}
	}

	files := []string{book}
	w.refused("mesh network 10.42.7.0/29 is full", files, "book", "add", "--name", "h", "--new-key", key("h"), book)
	if _, err := os.Stat(key("h")); err == nil {
		t.Error("a refused add left its key file")
	}
	w.refused(`member "A" already exists`, files, "book", "add", "--name", "A", "--public-key", b.Peers[1].PublicKey.String(), book)
	t.Run("refusals leave the book byte-identical", func(t *testing.T) {
		w := w.in(t)
		w.ok("book", "remove", "--name", "g", book)
		w.refused(`is already used by member "a"`, files, "book", "add", "--name", "x", "--public-key", b.Peers[0].PublicKey.String(), book)
		w.refused("already exists; refusing to overwrite", files, "book", "add", "--name", "x", "--new-key", key("a"), book)
		w.ok("book", "set", "--name", "e", "--subnet", "192.168.5.0/24", book)
		w.refused(`overlaps subnet 192.168.5.0/24 of peer "e"`, files, "book", "add", "--name", "x", "--new-key", key("x"), "--subnet", "192.168.5.128/25", book)
		w.refused("overlaps mesh network 10.42.7.0/29", files, "book", "add", "--name", "x", "--new-key", key("x"), "--subnet", "10.42.0.0/16", book)
		w.refused(`group "ops_1" is not a DNS label`, files, "book", "add", "--name", "x", "--new-key", key("x"), "--group", "ops_1", book)
		w.refused(`name "x_1" is not a DNS label`, files, "book", "add", "--name", "x_1", "--new-key", key("x"), book)
		w.refused(`address 10.42.7.1 is already used by peer "a"`, files, "book", "add", "--name", "x", "--new-key", key("x"), "--address", "10.42.7.1", book)
		w.refused(`member "zz": no such member`, files, "book", "remove", "--name", "zz", book)
		w.refused("nothing to change", files, "book", "set", "--name", "e", "--subnet", "192.168.5.0/24", book)
		w.refused("does not exist; to start a new book, give its mesh networks", nil, "book", "add", "--name", "a", "--public-key", newPublicKey(t), filepath.Join(t.TempDir(), "missing.toml"))
		w.refused("--network only starts a new book", files, "book", "add", "--name", "x", "--public-key", newPublicKey(t), "--network", "10.9.0.0/24", book)
		if _, err := os.Stat(key("x")); err == nil {
			t.Error("a refused add left its key file")
		}
	})

	t.Run("IPv6 network full", func(t *testing.T) {
		w := w.in(t)
		v6 := filepath.Join(t.TempDir(), "v6.toml")
		for i := 1; i <= 3; i++ {
			n := fmt.Sprintf("m%d", i)
			args := []string{"book", "add", "--name", n, "--public-key", newPublicKey(t), v6}
			if i == 1 {
				args = append([]string{"book", "add", "--network", "fd42:8::/126"}, args[2:]...)
			}
			if out := w.ok(args...); !strings.Contains(out, fmt.Sprintf("added %s: fd42:8::%d\n", n, i)) {
				t.Errorf("add %s printed %q", n, out)
			}
		}
		w.refused("mesh network fd42:8::/126 is full: all of its 3 host addresses are used", []string{v6}, "book", "add", "--name", "m4", "--public-key", newPublicKey(t), v6)
	})

	t.Run("comments and order are kept", func(t *testing.T) {
		w := w.in(t)
		path := filepath.Join(t.TempDir(), "c.toml")
		text := "# our mesh\nformat = 1\nserial = 3 # raise with every change\n\n[mesh]\nnetworks = [\"10.1.0.0/24\"]\n\n# the gateway\n[[peer]]\nname = \"gw\"\npublic_key = \"" + newPublicKey(t) + "\"\naddresses = [\"10.1.0.1\"] # fixed\n"
		if err := os.WriteFile(path, []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
		k := newPublicKey(t)
		w.ok("book", "add", "--name", "n", "--public-key", k, "--group", "ops", path)
		got, _ := os.ReadFile(path)
		want := strings.Replace(text, "serial = 3", "serial = 4", 1) + "\n[[peer]]\nname = \"n\"\npublic_key = \"" + k + "\"\naddresses = [\"10.1.0.2\"]\ngroups = [\"ops\"]\n"
		if string(got) != want {
			t.Errorf("after book add:\n%s\nwant:\n%s", got, want)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
			t.Errorf("mode %v after book add, want 0640 kept", fi.Mode().Perm())
		}
		w.ok("book", "check", path)
	})
	w.noPrivateKeys([]string{readKey(t, key("a")), readKey(t, key("e"))})
}

func newPublicKey(t *testing.T) string {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().String()
}

func TestBookAddSignKey(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	admin, allowed := newSigner(t, dir, "admin")
	book := filepath.Join(dir, "book.toml")
	out := w.ok("book", "add", "--network", "10.42.0.0/16", "--name", "a", "--public-key", newPublicKey(t), "--sign-key", admin, book)
	if !strings.Contains(out, book+".sig: signed serial 1 with ssh-ed25519 SHA256:") {
		t.Errorf("book add --sign-key printed %q", out)
	}
	files := []string{book, book + ".sig"}
	w.refused("is signed ("+book+".sig exists): an unsigned change would be refused", files,
		"book", "add", "--name", "b", "--public-key", newPublicKey(t), book)
	w.refused("is signed", files, "book", "remove", "--name", "a", book)
	w.refused("is signed", files, "book", "set", "--name", "a", "--relay", book)
	w.ok("book", "add", "--name", "b", "--public-key", newPublicKey(t), "--sign-key", admin, book)
	w.ok("book", "set", "--name", "b", "--endpoint", "192.0.2.7:51820", "--sign-key", admin, book)
	data, _ := os.ReadFile(book)
	// OpenSSH checks what book add wrote.
	sshKeygen(t, string(data), "-Y", "verify", "-f", allowed, "-I", "admin@example.com", "-n", "wgmesh-peerbook", "-s", book+".sig")
	if out := w.ok("book", "verify", "--trusted-signers", allowed, book); out != book+": good signature by admin@example.com, serial 3\n" {
		t.Errorf("book verify: %q", out)
	}
}

func TestBookAddConcurrent(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	w.ok("book", "add", "--network", "10.42.0.0/16", "--network", "fd42:42::/64", "--name", "first", "--public-key", newPublicKey(t), book)
	const n = 10
	var wg sync.WaitGroup
	codes := make([]int, n)
	errs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, errs[i] = w.run("book", "add", "--name", fmt.Sprintf("m%d", i), "--new-key", filepath.Join(dir, fmt.Sprintf("m%d.key", i)), book)
		}()
	}
	wg.Wait()
	b := loadTestBook(t, book)
	landed := 0
	for i := range n {
		_, inBook := b.PeerByName(fmt.Sprintf("m%d", i))
		switch {
		case codes[i] == 0 && !inBook:
			t.Errorf("add m%d exited 0 but m%d is not in the book: an update was lost", i, i)
		case codes[i] != 0 && inBook:
			t.Errorf("add m%d failed (%s) but m%d is in the book", i, errs[i], i)
		case codes[i] != 0:
			t.Errorf("add m%d failed: %s", i, errs[i]) // with the lock, none should
		default:
			landed++
		}
	}
	if b.Serial != uint64(1+landed) || len(b.Peers) != 1+landed {
		t.Errorf("%d adds landed; the book has serial %d and %d members, want %d and %d", landed, b.Serial, len(b.Peers), 1+landed, 1+landed)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".book.toml.tmp*")); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// peerIn returns the status of member name in r.
func peerIn(r control.Report, name string) (subnets []netip.Prefix, ok bool) {
	for _, p := range r.Peers {
		if p.Name == name {
			return p.Subnets, true
		}
	}
	return nil, false
}

func TestBookMembershipLive(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	key := func(n string) string { return filepath.Join(dir, n+".key") }
	ctl := func(n string) string { return filepath.Join(dir, "run", n, "wgmesh.sock") }
	w.ok("book", "add", "--network", "10.42.0.0/16", "--network", "fd42:42::/64", "--name", "a", "--new-key", key("a"), book)
	w.ok("book", "add", "--name", "b", "--new-key", key("b"), book)

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	srv := payloadServer(t, payload)
	a := startUp(t, w.bin, "a", ctl("a"), "--book", book, "--key", key("a"), "--listen-port", "0", "--expose", "tcp:9000="+srv.String())
	b := startUp(t, w.bin, "b", ctl("b"), "--book", book, "--key", key("b"), "--listen-port", "0")
	// The ports the system chose become the members' endpoints, by book set.
	for _, p := range []*proc{a, b} {
		port := p.readyAttr(t, "listen_port")
		w.ok("book", "set", "--name", p.name, "--endpoint", "127.0.0.1:"+port, book)
	}
	a.waitReport(t, w.bin, "serial 4", func(r control.Report) bool { return running(r, 4, "b") })
	b.waitReport(t, w.bin, "serial 4", func(r control.Report) bool { return running(r, 4, "a") })

	t.Run("added member joins and moves 1 MiB", func(t *testing.T) {
		out := w.in(t).ok("book", "add", "--name", "c", "--new-key", key("c"), book)
		if !strings.Contains(out, "added c: 10.42.0.3, fd42:42::3\n") {
			t.Errorf("book add printed %q", out)
		}
		a.waitReport(t, w.bin, "c added live", func(r control.Report) bool { return running(r, 5, "b", "c") })
		b.waitReport(t, w.bin, "c added live", func(r control.Report) bool { return running(r, 5, "a", "c") })
		c := startUp(t, w.bin, "c", ctl("c"), "--book", book, "--key", key("c"), "--listen-port", "0", "--forward", "tcp:127.0.0.1:0=a:9000")
		download(t, boundForward(t, c, "tcp", "a:9000"), payload)
		stopProc(t, c)
	})
	t.Run("changed member applied live", func(t *testing.T) {
		w.in(t).ok("book", "set", "--name", "c", "--subnet", "192.168.77.0/24", book)
		a.waitReport(t, w.bin, "c's new subnet", func(r control.Report) bool {
			s, ok := peerIn(r, "c")
			return r.BookSerial == 6 && ok && slices.Equal(s, []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")})
		})
	})
	t.Run("removed member dropped live", func(t *testing.T) {
		w.in(t).ok("book", "remove", "--name", "c", book)
		a.waitReport(t, w.bin, "c removed", func(r control.Report) bool { return running(r, 7, "b") })
		b.waitReport(t, w.bin, "c removed", func(r control.Report) bool { return running(r, 7, "a") })
	})
	for _, p := range []*proc{a, b} {
		if n := strings.Count(p.stderr.String(), "msg=ready"); n != 1 {
			t.Errorf("%s logged %d ready lines, want 1: it was restarted", p.name, n)
		}
	}
	stopProc(t, a)
	stopProc(t, b)
	w.noPrivateKeys([]string{readKey(t, key("a")), readKey(t, key("b")), readKey(t, key("c"))}, a, b)
}

func TestInviteJoinUp(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	admin, allowed := newSigner(t, dir, "admin")
	book := filepath.Join(dir, "book.toml")
	aKey := filepath.Join(dir, "a.key")
	w.ok("book", "add", "--network", "10.42.0.0/16", "--name", "a", "--new-key", aKey, "--sign-key", admin, book)

	payload := make([]byte, 64<<10)
	rand.Read(payload)
	srv := payloadServer(t, payload)
	a := startUp(t, w.bin, "a", filepath.Join(dir, "run", "a.sock"), "--book", book, "--key", aKey, "--listen-port", "0",
		"--trusted-signers", allowed, "--state-dir", filepath.Join(dir, "state-a"), "--expose", "tcp:9000="+srv.String())
	w.ok("book", "set", "--name", "a", "--endpoint", "127.0.0.1:"+a.readyAttr(t, "listen_port"), "--sign-key", admin, book)
	a.waitReport(t, w.bin, "serial 2", func(r control.Report) bool { return running(r, 2) })

	inv := filepath.Join(dir, "d.invite")
	out := w.ok("invite", "--name", "d", "--out", inv, "--sign-key", admin, book)
	if !strings.Contains(out, "added d: 10.42.0.2\n") || !strings.Contains(out, inv+": invitation for d, expires ") {
		t.Errorf("invite printed %q", out)
	}
	if fi, err := os.Stat(inv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("invitation: %v, %v; want mode 0600", fi, err)
	}
	a.waitReport(t, w.bin, "d invited", func(r control.Report) bool { return running(r, 3, "d") })

	// The new machine has nothing but the invitation.
	newMachine := filepath.Join(t.TempDir(), "etc", "wgmesh")
	out = w.ok("join", "--out", newMachine, inv)
	m := regexp.MustCompile(`start the node with:\n  (wgmesh up --config .*)\nwhich is the same as:\n  (wgmesh up .*)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("join printed no up command:\n%s", out)
	}
	if want := fmt.Sprintf("wgmesh up --config %s/wgmesh.toml", newMachine); m[1] != want {
		t.Errorf("join printed\n  %s\nwant\n  %s", m[1], want)
	}
	want := fmt.Sprintf("wgmesh up --book %s/book.toml --key %s/node.key --trusted-signers %s/allowed_signers", newMachine, newMachine, newMachine)
	if m[2] != want {
		t.Errorf("join printed\n  %s\nwant\n  %s", m[2], want)
	}
	if fi, err := os.Stat(filepath.Join(newMachine, "node.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node.key: %v, %v; want mode 0600", fi, err)
	}
	// The exact config command, plus what a test on one machine needs.
	args := append(strings.Fields(m[1])[2:], "--listen-port", "0", "--state-dir", filepath.Join(dir, "state-d"),
		"--forward", "tcp:127.0.0.1:0=a:9000")
	d := startUp(t, w.bin, "d", filepath.Join(dir, "run", "d.sock"), args...)
	download(t, boundForward(t, d, "tcp", "a:9000"), payload)
	w.refused("already exists; this machine has joined already", nil, "join", "--out", newMachine, inv)

	t.Run("expired invitation", func(t *testing.T) {
		w := w.in(t)
		inv := filepath.Join(dir, "e.invite")
		w.ok("invite", "--name", "e", "--ttl", "1s", "--out", inv, "--sign-key", admin, book)
		time.Sleep(1100 * time.Millisecond)
		out := filepath.Join(t.TempDir(), "e")
		w.refused("invitation expired at ", nil, "join", "--out", out, inv)
		if _, err := os.Stat(out); err == nil {
			t.Error("join of an expired invitation created its directory")
		}
	})
	t.Run("pasted invitation", func(t *testing.T) {
		w := w.in(t)
		inv := filepath.Join(dir, "p.invite")
		w.ok("invite", "--name", "p", "--out", inv, "--sign-key", admin, book)
		text, err := os.ReadFile(inv)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "p")
		code, stdout, stderr := runCLI(t, string(text), "join", "--out", out, "-")
		if code != 0 || !strings.Contains(stdout, "joined as p: 10.42.0.") {
			t.Fatalf("join from stdin: exit %d\n%s%s", code, stdout, stderr)
		}
		if _, err := peerbook.ReadKeyFile(filepath.Join(out, "node.key")); err != nil {
			t.Error(err)
		}
		w.refused("is not a wgmesh invitation", nil, "join", "--out", filepath.Join(t.TempDir(), "q"), book)
	})
	t.Run("book URL", func(t *testing.T) {
		w := w.in(t)
		inv := filepath.Join(dir, "g.invite")
		w.ok("invite", "--name", "g", "--book-url", "https://config.example.com/mesh/book.toml", "--out", inv, "--sign-key", admin, book)
		out := filepath.Join(t.TempDir(), "g")
		got := w.ok("join", "--out", out, inv)
		want := fmt.Sprintf("  wgmesh up --book https://config.example.com/mesh/book.toml --key %s/node.key --trusted-signers %s/allowed_signers\n", out, out)
		if !strings.HasSuffix(got, want) {
			t.Errorf("join printed\n%s\nwant it to end with\n%s", got, want)
		}
		if _, err := os.Stat(filepath.Join(out, "book.toml")); err == nil {
			t.Error("join wrote a copy of a book it follows by URL")
		}
		w.refused("is not an https:// (or http://) URL", []string{book}, "invite", "--name", "h", "--book-url", "file:///etc/passwd", "--out", filepath.Join(dir, "h.invite"), "--sign-key", admin, book)
	})
	t.Run("signed book needs --sign-key", func(t *testing.T) {
		w.in(t).refused("is signed", []string{book, book + ".sig"}, "invite", "--name", "f", "--out", filepath.Join(dir, "f.invite"), book)
		if _, err := os.Stat(filepath.Join(dir, "f.invite")); err == nil {
			t.Error("a refused invite left its invitation")
		}
	})
	stopProc(t, d)
	stopProc(t, a)
	w.noPrivateKeys([]string{readKey(t, aKey), readKey(t, filepath.Join(newMachine, "node.key"))}, a, d)
}

// zbarimg decodes the QR code in a PNG with Debian's zbar-tools; CI
// installs them.
func zbarimg(t *testing.T, path string) string {
	t.Helper()
	bin := testutil.Tool(t, "zbarimg", "zbar-tools")
	out, err := exec.Command(bin, "--quiet", "--raw", path).Output()
	if err != nil {
		t.Fatalf("zbarimg %s: %v", path, err)
	}
	// zbarimg ends every symbol's data with a newline of its own.
	return strings.TrimSuffix(string(out), "\n")
}

// halfBlockPNG turns the terminal drawing of a QR code back into a picture:
// each character is one module wide and two high, drawn characters light.
func halfBlockPNG(t *testing.T, text, path string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	const scale, margin = 4, 16
	width := len([]rune(lines[0]))
	img := image.NewGray(image.Rect(0, 0, width*scale+2*margin, 2*len(lines)*scale+2*margin))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y, line := range lines {
		for x, r := range []rune(line) {
			var top, bottom bool
			switch r {
			case '█':
				top, bottom = true, true
			case '▀':
				top = true
			case '▄':
				bottom = true
			case ' ':
			default:
				t.Fatalf("line %d: unexpected character %q in the QR drawing", y+1, r)
			}
			for half, lit := range []bool{top, bottom} {
				if lit {
					continue
				}
				for dy := range scale {
					for dx := range scale {
						img.SetGray(margin+x*scale+dx, margin+(2*y+half)*scale+dy, color.Gray{})
					}
				}
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

func TestBookExportQR(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	w.ok("book", "add", "--network", "10.42.0.0/16", "--network", "fd42:42::/64", "--name", "server", "--public-key", newPublicKey(t), "--endpoint", "203.0.113.10:51820", book)
	phoneKey := filepath.Join(dir, "phone.key")
	w.ok("book", "add", "--name", "phone", "--new-key", phoneKey, book)
	conf := w.ok("book", "export", "--peer", "phone", "--key", phoneKey, book)
	if !strings.Contains(conf, "PrivateKey = "+readKey(t, phoneKey)) {
		t.Fatalf("export has no PrivateKey line:\n%s", conf)
	}

	pngPath := filepath.Join(dir, "phone.png")
	w.ok("book", "export", "--peer", "phone", "--key", phoneKey, "--qr", "--png", pngPath, book)
	if fi, err := os.Stat(pngPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("PNG: %v, %v; want mode 0600 (it holds the private key)", fi, err)
	}
	if got := zbarimg(t, pngPath); got != conf {
		t.Errorf("the PNG decodes to\n%q\nwant the export\n%q", got, conf)
	}
	w.refused("already exists", []string{pngPath}, "book", "export", "--peer", "phone", "--key", phoneKey, "--qr", "--png", pngPath, book)

	term := w.ok("book", "export", "--peer", "phone", "--key", phoneKey, "--qr", book)
	drawn := filepath.Join(dir, "terminal.png")
	halfBlockPNG(t, term, drawn)
	if got := zbarimg(t, drawn); got != conf {
		t.Errorf("the terminal drawing decodes to\n%q\nwant the export\n%q", got, conf)
	}
}
