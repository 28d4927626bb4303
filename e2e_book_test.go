package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// End-to-end tests of how `wgmesh up` follows its book: a watched file
// (rename and in-place writes, SIGHUP), signed books, and books fetched
// over HTTPS with a cache for restarts.

// report runs `wgmesh status --json` against p and decodes all of it,
// the refused book included.
func (p *proc) report(t *testing.T, bin string) (control.Report, error) {
	t.Helper()
	var r control.Report
	out, err := exec.Command(bin, "status", "--json", "--control", p.control).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return r, fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return r, err
	}
	return r, json.Unmarshal(out, &r)
}

// waitReport polls p's status until cond holds, for at most 20 seconds.
func (p *proc) waitReport(t *testing.T, bin, what string, cond func(control.Report) bool) control.Report {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, what)
		}
		r, err := p.report(t, bin)
		if err == nil && cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 20s (last status: %+v, error: %v)", p.name, what, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// peerNames lists the members of a status other than the node itself.
func peerNames(r control.Report) []string {
	var names []string
	for _, p := range r.Peers {
		names = append(names, p.Name)
	}
	return names
}

// running reports whether r runs the book with serial and exactly the
// members peers (besides the node itself).
func running(r control.Report, serial uint64, peers ...string) bool {
	return r.BookSerial == serial && slices.Equal(peerNames(r), peers)
}

// stopProc sends SIGTERM to p and waits, bounded, for a clean exit.
func stopProc(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGTERM", p.name)
	}
	if p.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want 0", p.name, p.err)
	}
}

func TestEndToEndBookReload(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	bookPath := filepath.Join(dir, "book.toml")
	ms := newMembers(t, dir, "alpha", "beta", "gamma", "delta")
	alpha, beta, gamma, delta := ms[0], ms[1], ms[2], ms[3]
	writeBook(t, bookPath, 1, []*testMember{alpha, beta})
	p := startUp(t, bin, "alpha", filepath.Join(dir, "run", "wgmesh.sock"),
		"--book", bookPath, "--key", alpha.keyPath, "--listen-port", "0", "--log-level", "debug")
	p.waitReport(t, bin, "start-up with serial 1", func(r control.Report) bool { return running(r, 1, "beta") })

	t.Run("rename over the file", func(t *testing.T) {
		writeBook(t, bookPath, 2, []*testMember{alpha, beta, gamma})
		p.waitReport(t, bin, "serial 2 with gamma", func(r control.Report) bool { return running(r, 2, "beta", "gamma") })
	})

	t.Run("write in place", func(t *testing.T) {
		if err := os.WriteFile(bookPath, bookText(3, ms), 0o644); err != nil {
			t.Fatal(err)
		}
		r := p.waitReport(t, bin, "serial 3 with delta", func(r control.Report) bool { return running(r, 3, "beta", "gamma", "delta") })
		if r.LastRejection != nil {
			t.Errorf("status shows a rejection after a good book: %+v", r.LastRejection)
		}
	})

	t.Run("invalid book is rejected, then the next valid one applied", func(t *testing.T) {
		// An unknown key on line 3: the whole version is refused.
		lines := strings.SplitN(string(bookText(4, []*testMember{alpha})), "\n", 3)
		text := lines[0] + "\n" + lines[1] + "\nbogus = true\n" + lines[2]
		tmp := bookPath + ".tmp"
		os.WriteFile(tmp, []byte(text), 0o644)
		if err := os.Rename(tmp, bookPath); err != nil {
			t.Fatal(err)
		}
		r := p.waitReport(t, bin, "a rejection", func(r control.Report) bool { return r.LastRejection != nil })
		if !strings.Contains(r.LastRejection.Error, bookPath+":3: ") {
			t.Errorf("rejection %q does not name %s:3", r.LastRejection.Error, bookPath)
		}
		if !running(r, 3, "beta", "gamma", "delta") {
			t.Errorf("after a rejected book alpha runs serial %d with %v, want serial 3 with beta, gamma, delta", r.BookSerial, peerNames(r))
		}
		if since := time.Since(r.LastRejection.Time); since < 0 || since > time.Minute {
			t.Errorf("rejection time %v is not now", r.LastRejection.Time)
		}
		out, err := exec.Command(bin, "status", "--control", p.control).CombinedOutput()
		if err != nil || !regexp.MustCompile(`book: last update REJECTED \d+s ago, running serial 3: `+regexp.QuoteMeta(bookPath)+`:3: `).Match(out) {
			t.Errorf("status table does not show the rejection: %v\n%s", err, out)
		}
		if !strings.Contains(p.stderr.String(), bookPath+":3: ") {
			t.Error("the rejected book's problem was not logged as FILE:LINE")
		}

		writeBook(t, bookPath, 5, []*testMember{alpha, beta, gamma})
		r = p.waitReport(t, bin, "serial 5", func(r control.Report) bool { return running(r, 5, "beta", "gamma") })
		if r.LastRejection != nil {
			t.Errorf("the rejection is still shown after a good book: %+v", r.LastRejection)
		}
	})

	t.Run("a change the node cannot apply live is rejected", func(t *testing.T) {
		moved := *alpha
		moved.addrs = []string{"10.42.0.99"}
		writeBook(t, bookPath, 6, []*testMember{&moved, beta, gamma})
		r := p.waitReport(t, bin, "a rejection", func(r control.Report) bool { return r.LastRejection != nil })
		if !running(r, 5, "beta", "gamma") || r.Addresses[0].String() != alpha.addrs[0] {
			t.Errorf("alpha runs serial %d at %v with %v, want serial 5 at %s", r.BookSerial, r.Addresses, peerNames(r), alpha.addrs[0])
		}
	})

	t.Run("SIGHUP re-reads the book", func(t *testing.T) {
		// A write through a hard link in another directory changes the book
		// without an event in the book's directory: only SIGHUP finds it.
		link := filepath.Join(t.TempDir(), "link.toml")
		if err := os.Link(bookPath, link); err != nil {
			t.Skipf("cannot hard-link the book: %v", err)
		}
		if err := os.WriteFile(link, bookText(7, []*testMember{alpha, beta, delta}), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the watch's debounce is 200ms
		if r, err := p.report(t, bin); err != nil || r.BookSerial == 7 {
			t.Fatalf("the change was applied without SIGHUP (status %v, %v): the watch sees writes through hard links here, so this test cannot tell SIGHUP apart", r.BookSerial, err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		r := p.waitReport(t, bin, "serial 7 after SIGHUP", func(r control.Report) bool { return running(r, 7, "beta", "delta") })
		if r.LastRejection != nil {
			t.Errorf("rejection still shown: %+v", r.LastRejection)
		}
	})
	stopProc(t, p)
}

// sshKeygen runs ssh-keygen, which the signed-book tests need; CI installs
// openssh-client.
func sshKeygen(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	path := testutil.Tool(t, "ssh-keygen", "openssh-client")
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// newSigner makes an admin's SSH signing key at dir/name and an
// allowed_signers file, dir/allowed_signers, that trusts it for books as
// admin@example.com, and returns both paths.
func newSigner(t *testing.T, dir, name string) (key, allowed string) {
	t.Helper()
	key = filepath.Join(dir, name)
	sshKeygen(t, "", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed = filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(`admin@example.com namespaces="wgmesh-peerbook" `+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, allowed
}

func TestEndToEndSignedBook(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	admin, allowed := newSigner(t, dir, "admin")
	other := filepath.Join(dir, "other")
	sshKeygen(t, "", "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", other)
	bookPath := filepath.Join(dir, "book.toml")
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	alpha, beta, gamma := ms[0], ms[1], ms[2]

	sign := func(key string) {
		t.Helper()
		code, out, stderr := runCLI(t, "", "book", "sign", "--key", key, bookPath)
		if code != 0 || !strings.Contains(out, bookPath+".sig: signed serial") {
			t.Fatalf("book sign: exit %d, stdout %q, stderr %q", code, out, stderr)
		}
	}
	verify := func() (int, string) {
		t.Helper()
		code, out, stderr := runCLI(t, "", "book", "verify", "--trusted-signers", allowed, bookPath)
		return code, out + stderr
	}

	writeBook(t, bookPath, 1, []*testMember{alpha, beta})
	sign(admin)
	if code, out := verify(); code != 0 || out != bookPath+": good signature by admin@example.com, serial 1\n" {
		t.Fatalf("book verify of a signed book: exit %d, output %q", code, out)
	}
	// The signature is the one OpenSSH makes and checks.
	book, _ := os.ReadFile(bookPath)
	sshKeygen(t, string(book), "-Y", "verify", "-f", allowed, "-I", "admin@example.com", "-n", "wgmesh-peerbook", "-s", bookPath+".sig")

	stateDir := filepath.Join(dir, "state")
	p := startUp(t, bin, "alpha", filepath.Join(dir, "run", "wgmesh.sock"),
		"--book", bookPath, "--key", alpha.keyPath, "--listen-port", "0",
		"--trusted-signers", allowed, "--state-dir", stateDir)
	p.waitReport(t, bin, "start-up with serial 1", func(r control.Report) bool { return running(r, 1, "beta") })
	if !strings.Contains(p.stderr.String(), "signer=admin@example.com") {
		t.Error("the ready line does not name the signer")
	}

	rejected := func(what, want string) {
		t.Helper()
		// An earlier rejection may still be shown: wait for this one.
		r := p.waitReport(t, bin, what+" rejected with "+strconv.Quote(want), func(r control.Report) bool {
			return r.LastRejection != nil && strings.Contains(r.LastRejection.Error, want)
		})
		if r.BookSerial != 2 && r.BookSerial != 1 {
			t.Errorf("%s: running serial %d", what, r.BookSerial)
		}
	}

	t.Run("tampered book", func(t *testing.T) {
		writeBook(t, bookPath, 2, []*testMember{alpha, beta, gamma}) // the old signature stays
		rejected("tampered book", "signature does not match")
		if r, _ := p.report(t, bin); !running(r, 1, "beta") {
			t.Errorf("after a tampered book alpha runs serial %d with %v", r.BookSerial, peerNames(r))
		}
		if code, out := verify(); code != 1 || !strings.Contains(out, bookPath+": bad signature") {
			t.Errorf("book verify of a tampered book: exit %d, output %q", code, out)
		}
	})

	t.Run("signed again", func(t *testing.T) {
		sign(admin)
		r := p.waitReport(t, bin, "serial 2", func(r control.Report) bool { return running(r, 2, "beta", "gamma") })
		if r.LastRejection != nil {
			t.Errorf("rejection still shown: %+v", r.LastRejection)
		}
		if _, err := os.Stat(filepath.Join(stateDir, "serial")); err != nil {
			t.Errorf("no serial recorded in --state-dir: %v", err)
		}
	})

	t.Run("older serial", func(t *testing.T) {
		writeBook(t, bookPath, 1, []*testMember{alpha, beta})
		sign(admin)
		rejected("older serial", "lower than 2")
	})

	t.Run("unknown signer", func(t *testing.T) {
		writeBook(t, bookPath, 3, []*testMember{alpha, gamma})
		sign(other)
		rejected("unknown signer", "not allowed")
		if code, out := verify(); code != 1 || !strings.Contains(out, bookPath+": unknown signer") {
			t.Errorf("book verify by an unknown signer: exit %d, output %q", code, out)
		}
		if r, _ := p.report(t, bin); !running(r, 2, "beta", "gamma") {
			t.Errorf("alpha runs serial %d with %v, want serial 2", r.BookSerial, peerNames(r))
		}
	})

	t.Run("unsigned", func(t *testing.T) {
		os.Remove(bookPath + ".sig")
		if code, out := verify(); code != 1 || !strings.Contains(out, bookPath+": unsigned") {
			t.Errorf("book verify without a signature: exit %d, output %q", code, out)
		}
		rejected("unsigned book", "not signed")
	})

	t.Run("signed by ssh-keygen", func(t *testing.T) {
		sshKeygen(t, "", "-Y", "sign", "-n", "wgmesh-peerbook", "-f", admin, bookPath)
		if code, out := verify(); code != 0 || !strings.Contains(out, "good signature by admin@example.com, serial 3") {
			t.Errorf("book verify of ssh-keygen's signature: exit %d, output %q", code, out)
		}
		r := p.waitReport(t, bin, "serial 3", func(r control.Report) bool { return running(r, 3, "gamma") })
		if r.LastRejection != nil {
			t.Errorf("rejection still shown: %+v", r.LastRejection)
		}
	})
	stopProc(t, p)

	t.Run("restart refuses an older book", func(t *testing.T) {
		writeBook(t, bookPath, 2, []*testMember{alpha, beta})
		sign(admin)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "up", "--book", bookPath, "--key", alpha.keyPath, "--listen-port", "0",
			"--trusted-signers", allowed, "--state-dir", stateDir, "--control", filepath.Join(dir, "run2", "s.sock")).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "lower than 3") {
			t.Errorf("up with an older signed book: %v, want exit 1 naming the serial:\n%s", err, out)
		}
	})
}

func TestEndToEndRemoteBook(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	alpha, beta, gamma := ms[0], ms[1], ms[2]

	var mu sync.Mutex
	current := bookText(1, []*testMember{alpha, beta})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/book.toml" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		w.Write(current)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused certificate is expected
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/book.toml"
	stateDir := filepath.Join(dir, "state")
	args := []string{"--book", url, "--book-ca", ca, "--book-poll", "200ms", "--state-dir", stateDir,
		"--key", alpha.keyPath, "--listen-port", "0"}
	ctlPath := filepath.Join(dir, "run", "wgmesh.sock")

	t.Run("untrusted certificate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "up", "--book", url, "--key", alpha.keyPath, "--listen-port", "0",
			"--state-dir", t.TempDir(), "--control", filepath.Join(t.TempDir(), "s.sock")).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "certificate") {
			t.Errorf("up without --book-ca: %v, want exit 1 about the certificate:\n%s", err, out)
		}
	})

	p := startUp(t, bin, "alpha", ctlPath, args...)
	p.waitReport(t, bin, "start-up with serial 1", func(r control.Report) bool { return running(r, 1, "beta") })

	mu.Lock()
	current = bookText(2, []*testMember{alpha, beta, gamma})
	mu.Unlock()
	p.waitReport(t, bin, "serial 2 from the server", func(r control.Report) bool { return running(r, 2, "beta", "gamma") })

	mu.Lock()
	current = []byte(badBook)
	mu.Unlock()
	r := p.waitReport(t, bin, "a rejection", func(r control.Report) bool { return r.LastRejection != nil })
	if !strings.Contains(r.LastRejection.Error, ":3: ") || !running(r, 2, "beta", "gamma") {
		t.Errorf("after a bad remote book: serial %d, %v, rejection %q", r.BookSerial, peerNames(r), r.LastRejection.Error)
	}
	stopProc(t, p)

	srv.Close()
	p = startUp(t, bin, "alpha again", ctlPath, args...)
	p.waitReport(t, bin, "start-up from the cache", func(r control.Report) bool { return running(r, 2, "beta", "gamma") })
	if !strings.Contains(p.stderr.String(), "cached") {
		t.Errorf("no warning about starting from the cached book:\n%s", p.stderr.String())
	}
	stopProc(t, p)
}
