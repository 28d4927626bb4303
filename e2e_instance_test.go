package main

import (
	"encoding/json"
	"fmt"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/control"
)

// TestTwoInstancesOneHost starts two nodes on one host from two config
// files and no other flags: each gets its own control socket and state
// dir from its file's name, and status finds them by instance or lists
// both.
func TestTwoInstancesOneHost(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	runDir := t.TempDir()
	env := append(os.Environ(), "XDG_RUNTIME_DIR="+runDir, "XDG_STATE_HOME="+filepath.Join(runDir, "state"))
	ms := newMembers(t, dir, "alpha", "beta")
	writeBook(t, filepath.Join(dir, "book.toml"), 1, ms)
	// Unique names: as root the base is /run/wgmesh, shared with the host.
	prefix := fmt.Sprintf("wgmesh-test-%d-", os.Getpid())
	var names []string
	var procs []*exec.Cmd
	for _, m := range ms {
		name := prefix + m.name
		names = append(names, name)
		cfg := filepath.Join(dir, name+".toml")
		writeFile(t, cfg, fmt.Sprintf("book = \"book.toml\"\nkey = %q\nlisten_port = 0\n", filepath.Base(m.keyPath)))
		cmd := exec.Command(bin, "up", "--config", cfg)
		cmd.Env = env
		var stderr testutil.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if os.Geteuid() == 0 {
				os.Remove(filepath.Join("/run/wgmesh", name, "control.sock"))
				os.Remove(filepath.Join("/run/wgmesh", name))
			}
			if t.Failed() {
				t.Logf("%s stderr:\n%s", name, stderr.String())
			}
		})
	}
	status := func(args ...string) (string, error) {
		c := exec.Command(bin, append([]string{"status"}, args...)...)
		c.Env = env
		out, err := c.CombinedOutput()
		return string(out), err
	}
	for i, name := range names {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := status("--json", "--instance", name)
			var rep control.Report
			if err == nil && json.Unmarshal([]byte(out), &rep) == nil {
				if rep.Name != ms[i].name {
					t.Errorf("instance %s answers as %q", name, rep.Name)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %s: no status within 20s: %v %s", name, err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		base := filepath.Join(runDir, "wgmesh")
		if os.Geteuid() == 0 {
			base = "/run/wgmesh"
		}
		if _, err := os.Stat(filepath.Join(base, name, "control.sock")); err != nil {
			t.Errorf("control socket of %s: %v", name, err)
		}
	}
	out, err := status()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for i, name := range names {
		if !strings.Contains(out, name+"  ") || !strings.Contains(out, ms[i].name) {
			t.Errorf("status lists no %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "--instance NAME") {
		t.Errorf("status of several nodes:\n%s", out)
	}
	var list []struct {
		Instance string         `json:"instance"`
		Status   control.Report `json:"status"`
	}
	out, err = status("--json")
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) < 2 {
		t.Errorf("status --json of several: %v\n%s", err, out)
	}
	if out, err := status("--instance", prefix+"none"); err == nil || !strings.Contains(out, "no node answers on") {
		t.Errorf("unknown instance: %v %s", err, out)
	}
}
