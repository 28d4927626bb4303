//go:build unix

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
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

// signedUpArgs writes a signed book of two members in dir, makes the
// state directory dir/state, and returns the arguments of an `up` of the
// first member that trusts the signer and keeps its state there.
func signedUpArgs(t *testing.T, dir string) (args []string, state string) {
	t.Helper()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	key, allowed := newSigner(t, dir, "id_ed25519")
	if code, _, stderr := runCLI(t, "", "book", "sign", "--key", key, book); code != 0 {
		t.Fatalf("book sign: %s", stderr)
	}
	state = filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{"--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock"),
		"--trusted-signers", allowed, "--state-dir", state}, state
}

// TestUpRefusesOpenStateDir: a --state-dir that others can write was
// used; up now refuses it before anything starts, naming the flag.
func TestUpRefusesOpenStateDir(t *testing.T) {
	args, state := signedUpArgs(t, t.TempDir())
	if err := os.Chmod(state, 0o777); err != nil {
		t.Fatal(err)
	}
	code, stderr := upBounded(t, args...)
	if code != 1 || !strings.Contains(stderr, "--state-dir: state directory "+state+" has mode 0777") || !strings.Contains(stderr, "chmod 700 "+state) {
		t.Fatalf("up with a 0777 state dir: exit %d, stderr %q", code, stderr)
	}
}

// TestUpStateFIFO: a FIFO named serial in the state dir hung `up` in
// open(2), where SIGTERM could not end it; now it is refused at once,
// naming --state-dir and the file.
func TestUpStateFIFO(t *testing.T) {
	args, state := signedUpArgs(t, t.TempDir())
	serial := filepath.Join(state, "serial")
	testutil.FIFO(t, serial)
	type result struct {
		code   int
		stderr string
	}
	r := testutil.Within(t, 10*time.Second, "up with a FIFO named serial in the state dir", func() result {
		code, stderr := upBounded(t, args...)
		return result{code, stderr}
	})
	if r.code != 1 || !strings.Contains(r.stderr, "wgmesh: --state-dir: ") || !strings.Contains(r.stderr, serial+" is not a regular file (a FIFO)") {
		t.Fatalf("up with a FIFO serial: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestUpExitNodeNetstack: `up --exit-node` in netstack mode (no longer
// refused as TUN-only) checks the member it names: one without exit =
// true is refused with the book line to change.
func TestUpExitNodeNetstack(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	code, stderr := upBounded(t, "--book", book, "--key", ms[0].keyPath, "--control", filepath.Join(dir, "s.sock"),
		"--state-dir", filepath.Join(dir, "state"), "--listen-port", "0", "--mode", "netstack", "--exit-node", "beta")
	if code != 1 || !strings.Contains(stderr, `member "beta" is not an exit member; set exit = true on it in the peer book `+book+" (line ") {
		t.Errorf("up --exit-node beta: exit %d, stderr %q; want beta's book line named", code, stderr)
	}
}
