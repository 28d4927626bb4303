package main

import (
	"github.com/wgmesh/wgmesh/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBashCompletion(t *testing.T) {
	bash := testutil.Tool(t, "bash", "bash")
	bin := buildBinary(t)
	complete := func(words ...string) string {
		t.Helper()
		script := `source <(wgmesh completion bash)
COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1))
_wgmesh; echo "${COMPREPLY[*]}"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", words, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("wgmesh", "st"); got != "status" {
		t.Errorf("wgmesh st<TAB>: %q", got)
	}
	if got := complete("wgmesh", "up", "--listen"); got != "--listen-port" {
		t.Errorf("wgmesh up --listen<TAB>: %q", got)
	}
	if got := complete("wgmesh", "up", "--conf"); got != "--config" {
		t.Errorf("wgmesh up --conf<TAB>: %q", got)
	}
	if got := complete("wgmesh", "book", "ch"); got != "check" {
		t.Errorf("wgmesh book ch<TAB>: %q", got)
	}
}

func TestCompletionScriptsAndManPage(t *testing.T) {
	code, fish, stderr := runCLI(t, "", "completion", "fish")
	if code != 0 || !strings.Contains(fish, "complete -c wgmesh") || !strings.Contains(fish, "-l listen-port") || !strings.Contains(fish, "-l instance") {
		t.Errorf("fish: exit %d %s\n%s", code, stderr, fish)
	}
	code, zsh, _ := runCLI(t, "", "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zsh, "#compdef wgmesh\n") || !strings.Contains(zsh, "--generate-bash-completion") {
		t.Errorf("zsh: exit %d\n%s", code, zsh)
	}
	if code, _, stderr := runCLI(t, "", "completion", "tcsh"); code != 2 || !strings.Contains(stderr, "want bash, zsh or fish") {
		t.Errorf("tcsh: exit %d %s", code, stderr)
	}
	code, man, _ := runCLI(t, "", "man")
	for _, want := range []string{".TH wgmesh 1", "/etc/wgmesh/NAME.toml", `\fB--config\fP`, `\fB--instance\fP`, ".SH COMMANDS"} {
		if code != 0 || !strings.Contains(man, want) {
			t.Errorf("man page: exit %d, no %q", code, want)
		}
	}
}
