package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Tool returns the path of the program name, which the Debian package pkg
// installs. Where it is missing the test is skipped, but on CI (CI set in
// the environment) it fails: .ci/run installs every tool a test uses, and
// those tests must run there.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	what := name
	if pkg != name {
		what += " (" + pkg + ")"
	}
	msg := fmt.Sprintf("%s is not installed; .ci/run installs it", what)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
