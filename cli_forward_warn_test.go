package main

import (
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
