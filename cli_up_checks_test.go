package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	code, _, stderr := runCLI(t, "", "up", "--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock"),
		"--trusted-signers", allowed, "--state-dir", state)
	if code != 1 || !strings.Contains(stderr, "--state-dir: state directory "+state+" has mode 0777") || !strings.Contains(stderr, "chmod 700 "+state) {
		t.Fatalf("up with a 0777 state dir: exit %d, stderr %q", code, stderr)
	}
}
