package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/config"
	"github.com/wgmesh/wgmesh/node"
)

// upSettingsOf runs `wgmesh up ARGS` up to the checked settings, without
// starting a node.
func upSettingsOf(t *testing.T, args ...string) (upConfig, string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp(strings.NewReader(""), &out, &out)
	var cfg upConfig
	var name string
	var err error
	for _, cmd := range app.Commands {
		if cmd.Name == "up" {
			cmd.Action = func(c *cli.Context) error {
				e := &env{stdout: &out, stderr: &out}
				cfg, name, err = e.upSettings(c)
				return nil
			}
		}
	}
	if rerr := app.RunContext(t.Context(), append([]string{"wgmesh", "up"}, args...)); rerr != nil {
		return cfg, name, rerr
	}
	return cfg, name, err
}

// privateRuntime points the non-root runtime and state directories into
// the test's directory. Root uses /run/wgmesh and /var/lib/wgmesh.
func privateRuntime(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFileOverrideOrder(t *testing.T) {
	privateRuntime(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "home.toml")
	writeFile(t, path, `book = "book.toml"
key = "/etc/wgmesh/home.key"
listen_port = 51999
forward = ["tcp:127.0.0.1:2222=server:22"]
resolve_interval = "10s"
metrics = "9586"
state_dir = "state"
`)
	// The file alone, then flags over it.
	cfg, name, err := upSettingsOf(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.book != filepath.Join(dir, "book.toml") || cfg.keyPath != "/etc/wgmesh/home.key" || cfg.listenPort != 51999 ||
		len(cfg.forwards) != 1 || cfg.resolveInterval != 10*time.Second || cfg.metrics != "127.0.0.1:9586" ||
		cfg.stateDir != filepath.Join(dir, "state") || cfg.mode != node.ModeNetstack {
		t.Errorf("from the file: %+v", cfg)
	}
	if name != "home" {
		t.Errorf("instance %q, want the file's name home", name)
	}
	cfg, name, err = upSettingsOf(t, "--config", path, "--listen-port", "0", "--key", "/k",
		"--forward", "tcp:127.0.0.1:1=a:1", "--forward", "tcp:127.0.0.1:2=b:2", "--resolve-interval", "1m", "--instance", "work")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listenPort != node.EphemeralPort || cfg.keyPath != "/k" || len(cfg.forwards) != 2 ||
		cfg.forwards[0].Target != "a:1" || cfg.resolveInterval != time.Minute || cfg.book != filepath.Join(dir, "book.toml") {
		t.Errorf("flags over the file: %+v", cfg)
	}
	if name != "work" || !strings.HasSuffix(cfg.controlPath, filepath.Join("work", "control.sock")) {
		t.Errorf("instance %q, control %s", name, cfg.controlPath)
	}
	if cfg.stateDir != filepath.Join(dir, "state") {
		t.Errorf("state_dir of the file lost: %s", cfg.stateDir)
	}
}

func TestConfigFileRefusedWithLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, path, "book = \"b.toml\"\nkey = \"k\"\nlisten_prot = 1\nmode = \"tap\"\n")
	code, _, stderr := runCLI(t, "", "up", "--config", path)
	if code != 2 || !strings.Contains(stderr, path+":3: unknown key \"listen_prot\"") || !strings.Contains(stderr, path+":4: mode \"tap\"") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	// A value the flag refuses names the file's line too.
	writeFile(t, path, "book = \"b.toml\"\nkey = \"k\"\n\nbook_poll = \"1m\"\nlog_level = \"info\"\nproxy_allow = [\"x\"]\n")
	code, _, stderr = runCLI(t, "", "up", "--config", path)
	if code != 2 || !strings.Contains(stderr, path+":4: book_poll: --book-poll applies to a --book URL") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runCLI(t, "", "up", "--config", filepath.Join(t.TempDir(), "none.toml"))
	if code != 2 || !strings.Contains(stderr, "none.toml") {
		t.Errorf("missing file: exit %d, stderr:\n%s", code, stderr)
	}
}

// Every key of the file is a flag of up, and every flag of up but
// --config is a key: the two cannot drift apart.
func TestConfigKeysAreUpFlags(t *testing.T) {
	var e env
	flags := map[string]bool{}
	up := e.upCommand()
	e.acceptLogLevel([]*cli.Command{up})
	for _, f := range up.Flags {
		flags[f.Names()[0]] = true
	}
	keys := map[string]bool{}
	for _, k := range config.Keys() {
		keys[config.FlagName(k)] = true
		if !flags[config.FlagName(k)] {
			t.Errorf("config key %s: no flag --%s on up", k, config.FlagName(k))
		}
	}
	for f := range flags {
		if !keys[f] && f != "config" {
			t.Errorf("up flag --%s has no config key %s", f, strings.ReplaceAll(f, "-", "_"))
		}
	}
}

func TestInstancePaths(t *testing.T) {
	privateRuntime(t)
	base, state := runtimeBase(), defaultStateDir()
	if os.Geteuid() == 0 {
		if base != "/run/wgmesh" || state != "/var/lib/wgmesh" {
			t.Errorf("root: %s %s", base, state)
		}
	} else if base != filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "wgmesh") {
		t.Errorf("user: %s", base)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "wgmesh"},
		{[]string{"--mode", "tun"}, defaultTUNName()},
		{[]string{"--mode", "tun", "--interface", "wg7"}, "wg7"},
		{[]string{"--instance", "lab"}, "lab"},
		{[]string{"--instance", "lab", "--control", "/tmp/x.sock", "--state-dir", "/tmp/st"}, "lab"},
	} {
		cfg, name, err := upSettingsOf(t, append([]string{"--book", "b.toml", "--key", "k"}, tc.args...)...)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		wantControl, wantState := filepath.Join(base, tc.want, "control.sock"), filepath.Join(state, tc.want)
		if slices.Contains(tc.args, "--control") {
			wantControl, wantState = "/tmp/x.sock", "/tmp/st"
		}
		if name != tc.want || cfg.controlPath != wantControl || cfg.stateDir != wantState {
			t.Errorf("%v: instance %q control %s state %s; want %q %s %s", tc.args, name, cfg.controlPath, cfg.stateDir, tc.want, wantControl, wantState)
		}
	}
	if _, _, err := upSettingsOf(t, "--book", "b", "--key", "k", "--instance", "../x"); err == nil || !strings.Contains(err.Error(), "instance name") {
		t.Errorf("bad name: %v", err)
	}
}

func TestRuntimeBaseRefusesOpenDir(t *testing.T) {
	privateRuntime(t)
	base := runtimeBase()
	if os.Geteuid() == 0 {
		// Root's base is /run/wgmesh: made private, never opened up here.
		if _, _, err := upSettingsOf(t, "--book", "b", "--key", "k"); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(base); err != nil || fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: %v %v", base, err, fi.Mode())
		}
		return
	}
	if err := os.MkdirAll(base, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o777)
	if _, _, err := upSettingsOf(t, "--book", "b", "--key", "k"); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("open runtime dir: %v", err)
	}
}

func TestVersionCommand(t *testing.T) {
	code, out, stderr := runCLI(t, "", "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for i, prefix := range []string{"wgmesh ", "go go1.", "wireguard-go v", "gvisor v"} {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d %q, want %s…", i+1, lines[i], prefix)
		}
	}
	// The embedded modules' versions are the ones go.mod requires.
	for _, l := range lines[2:] {
		v := l[strings.LastIndex(l, " ")+1:]
		if !bytes.Contains(gomod, []byte(" "+v+"\n")) {
			t.Errorf("%q: version not in go.mod", l)
		}
	}
}

// TestInstanceStateDirKeepsLegacySerial: a node that ran before instances
// kept its serial in the base directory; moving to base/NAME would forget
// it and with it the rollback protection.
func TestInstanceStateDirKeepsLegacySerial(t *testing.T) {
	base := t.TempDir()
	if got := instanceStateDirIn(base, "wgmesh", true); got != filepath.Join(base, "wgmesh") {
		t.Fatalf("fresh host: %s", got)
	}
	if err := os.WriteFile(filepath.Join(base, "serial"), []byte("7 x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := instanceStateDirIn(base, "wgmesh", true); got != base {
		t.Errorf("unnamed node with a legacy serial: %s, want %s", got, base)
	}
	if got := instanceStateDirIn(base, "home", false); got != filepath.Join(base, "home") {
		t.Errorf("a named instance never used the legacy directory: %s", got)
	}
	if err := os.Mkdir(filepath.Join(base, "wgmesh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "wgmesh", "serial"), []byte("9 y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := instanceStateDirIn(base, "wgmesh", true); got != filepath.Join(base, "wgmesh") {
		t.Errorf("instance directory with its own serial: %s", got)
	}
}
