package main

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/daemon"
)

// TestUpNamesFlagsOfBusyPorts: the daemon names its Config fields; `up`
// names the flags, for every port in use at once.
func TestUpNamesFlagsOfBusyPorts(t *testing.T) {
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	tcp := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	metrics, socks := tcp(), tcp()
	code, _, stderr := runCLI(t, "", "up", "--book", book, "--key", ms[0].keyPath, "--listen-port", "0",
		"--control", filepath.Join(dir, "s.sock"), "--metrics", metrics, "--socks", socks)
	if code != 1 || !strings.Contains(stderr, "--metrics: cannot listen on "+metrics+": ") || !strings.Contains(stderr, "\n--socks: cannot listen on "+socks+": ") {
		t.Errorf("up with --metrics and --socks in use: exit %d, stderr %q; want both flags named", code, stderr)
	}
	code, _, stderr = runCLI(t, "", "up", "--book", book, "--key", ms[0].keyPath, "--listen-port", "0",
		"--control", filepath.Join(dir, "s.sock"), "--dns", udp.LocalAddr().String())
	if code != 1 || !strings.Contains(stderr, "wgmesh: --dns: cannot listen on "+udp.LocalAddr().String()+" (udp): ") {
		t.Errorf("up with --dns in use: exit %d, stderr %q", code, stderr)
	}
}

func TestFlagError(t *testing.T) {
	inner := errors.New("boom")
	for _, tc := range []struct {
		in   error
		want string
	}{
		{&daemon.ConfigError{Field: "StateDir", Err: inner}, "--state-dir: boom"},
		{&daemon.ConfigError{Field: "ControlPath", Err: inner}, "--control: boom"},
		{errors.Join(&daemon.ConfigError{Field: "Metrics", Err: inner}, &daemon.ConfigError{Field: "HTTPProxy", Err: inner}), "--metrics: boom\n--http-proxy: boom"},
		{&daemon.ConfigError{Field: "Unknown", Err: inner}, "Unknown: boom"},
		{inner, "boom"},
	} {
		got := flagError(tc.in)
		if got.Error() != tc.want || !errors.Is(got, inner) {
			t.Errorf("flagError(%q) = %q, want %q wrapping the cause", tc.in, got, tc.want)
		}
	}
	if flagError(nil) != nil {
		t.Error("flagError(nil) != nil")
	}
}
