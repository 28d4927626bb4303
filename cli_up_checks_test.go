//go:build unix

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForwardWarnsBeyondLoopback: a --forward on a reachable address
// starts (it goes to one fixed target) but is logged, naming the flag.
func TestForwardWarnsBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	// A missing key ends `up` right after the flag checks.
	up := func(fwd string) string {
		t.Helper()
		code, _, stderr := runCLI(t, "", "up", "--book", book, "--key", filepath.Join(dir, "missing.key"),
			"--control", filepath.Join(dir, "s.sock"), "--forward", fwd)
		if code != 1 || !strings.Contains(stderr, "missing.key") {
			t.Fatalf("up --forward %s: exit %d, stderr %q; want the missing key refused", fwd, code, stderr)
		}
		return stderr
	}
	for _, fwd := range []string{"tcp:0.0.0.0:0=beta:80", "udp:[::]:0=beta:53", "tcp:192.0.2.1:8080=10.42.0.2:80"} {
		if out := up(fwd); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "--forward "+fwd+" listens on a non-loopback address") {
			t.Errorf("up --forward %s logged %q; want a warning naming the flag", fwd, out)
		}
	}
	for _, fwd := range []string{"tcp:127.0.0.1:0=beta:80", "udp:[::1]:0=beta:53", "tcp:localhost:0=beta:80"} {
		if out := up(fwd); strings.Contains(out, "non-loopback") {
			t.Errorf("up --forward %s warns: %q", fwd, out)
		}
	}
}

// upBounded runs `up` in-process, ended after 10 s if it starts at all
// (which these tests expect it not to), and returns its exit code and
// stderr.
func upBounded(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"wgmesh", "up"}, args...), strings.NewReader(""), &out, &errOut)
	return code, errOut.String()
}

// TestUpRefusesOpenStateDir: a --state-dir that others can write was
// used; up now refuses it before anything starts, naming the flag.
func TestUpRefusesOpenStateDir(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	key := filepath.Join(dir, "id_ed25519")
	sshKeygen(t, "", "-q", "-t", "ed25519", "-N", "", "-f", key)
	if code, _, stderr := runCLI(t, "", "book", "sign", "--key", key, book); code != 0 {
		t.Fatalf("book sign: %s", stderr)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(`admin namespaces="wgmesh-peerbook" `+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o777); err != nil {
		t.Fatal(err)
	}
	code, stderr := upBounded(t, "--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock"),
		"--trusted-signers", allowed, "--state-dir", state)
	if code != 1 || !strings.Contains(stderr, "--state-dir: state directory "+state+" has mode 0777") || !strings.Contains(stderr, "chmod 700 "+state) {
		t.Fatalf("up with a 0777 state dir: exit %d, stderr %q", code, stderr)
	}
}

// TestUpStateFIFO: a FIFO named serial in the state dir hung `up` in
// open(2), where SIGTERM could not end it; now it is refused at once,
// naming --state-dir and the file.
func TestUpStateFIFO(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	key := filepath.Join(dir, "id_ed25519")
	sshKeygen(t, "", "-q", "-t", "ed25519", "-N", "", "-f", key)
	if code, _, stderr := runCLI(t, "", "book", "sign", "--key", key, book); code != 0 {
		t.Fatalf("book sign: %s", stderr)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(`admin namespaces="wgmesh-peerbook" `+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(state, "serial")
	if err := syscall.Mkfifo(serial, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stderr := upBounded(t, "--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock"),
			"--trusted-signers", allowed, "--state-dir", state)
		done <- result{code, stderr}
	}()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.stderr, "wgmesh: --state-dir: ") || !strings.Contains(r.stderr, serial+" is not a regular file (a FIFO)") {
			t.Fatalf("up with a FIFO serial: exit %d, stderr %q", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		if f, err := os.OpenFile(serial, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close() // let the stuck open return
		}
		t.Fatal("up hangs on a FIFO named serial in the state dir")
	}
}
