package hostnet

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func newApplied(t *testing.T) *Applied {
	return &Applied{ifname: "wgm0", sysctls: map[string]string{}, stateFile: filepath.Join(t.TempDir(), "state", StateFile("wgm0")), stateOK: true}
}

// The state file round-trips, is written with mode 0600 and goes once
// its values are restored.
func TestStateFileRoundTrip(t *testing.T) {
	a := newApplied(t)
	a.sysctls["net.ipv4.ip_forward"] = "0"
	a.sysctls["net.ipv6.conf.all.forwarding"] = "0"
	if err := a.saveState(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(a.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b := &Applied{ifname: "wgm0", sysctls: map[string]string{}, stateFile: a.stateFile}
	if err := b.loadState(); err != nil {
		t.Fatal(err)
	}
	if len(b.sysctls) != 2 || b.sysctls["net.ipv4.ip_forward"] != "0" || b.sysctls["net.ipv6.conf.all.forwarding"] != "0" {
		t.Errorf("loaded %v", b.sysctls)
	}
	b.sysctls = map[string]string{}
	if err := b.saveState(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.stateFile); !os.IsNotExist(err) {
		t.Errorf("state file with nothing to restore still there: %v", err)
	}
	if err := b.loadState(); err != nil {
		t.Errorf("missing state file: %v", err)
	}
}

// A state file names sysctls by key, and only the forwarding ones: a
// changed file cannot make Undo write to any other path. A FIFO or a
// symlink in its place is refused without blocking.
func TestStateFileRefusesWhatItDidNotWrite(t *testing.T) {
	for name, content := range map[string]string{
		"a path":        "/etc/passwd = 0\n",
		"another key":   "kernel.modprobe = /tmp/x\n",
		"not a number":  "net.ipv4.ip_forward = 0\nnet.ipv4.ip_forward = 1; rm\n",
		"no equal sign": "net.ipv4.ip_forward 0\n",
	} {
		a := newApplied(t)
		os.MkdirAll(filepath.Dir(a.stateFile), 0o700)
		os.WriteFile(a.stateFile, []byte(content), 0o600)
		a.stateOK = false
		err := a.loadState()
		if err == nil || !strings.Contains(err.Error(), a.stateFile+":") {
			t.Errorf("%s: got %v, want an error naming %s and the line", name, err, a.stateFile)
		}
		// Undo after the refused start keeps the file for the admin.
		if err := a.restoreSysctls(); err != nil {
			t.Errorf("%s: restore: %v", name, err)
		}
		if _, err := os.Stat(a.stateFile); err != nil {
			t.Errorf("%s: a refused state file was removed: %v", name, err)
		}
	}
	a := newApplied(t)
	os.MkdirAll(filepath.Dir(a.stateFile), 0o700)
	if err := syscall.Mkfifo(a.stateFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.loadState(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	os.Remove(a.stateFile)
	os.Symlink("/proc/sys/net/ipv4/ip_forward", a.stateFile)
	if err := a.loadState(); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("symlink: %v", err)
	}
}
