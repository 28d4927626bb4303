package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadCredentials(t *testing.T) {
	c := writeCredentials(t, "# comment\n\nalice:pw1\r\nbob:a:b:c\n  \n")
	if c.Len() != 2 {
		t.Fatalf("%d users, want 2", c.Len())
	}
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "pw1", true},
		{"bob", "a:b:c", true},
		{"alice", "pw", false},
		{"alice", "pw1 ", false},
		{"Alice", "pw1", false},
		{"carol", "", false},
		{"", "", false},
	} {
		if got := c.Valid(tc.user, tc.pass); got != tc.ok {
			t.Errorf("Valid(%q, %q) = %v", tc.user, tc.pass, got)
		}
	}
	var none *Credentials
	if none.Valid("alice", "pw1") {
		t.Error("nil credentials accepted a user")
	}
}

func TestLoadCredentialsErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode)
		return path
	}
	bad := write("bad", "alice:pw\nnocolon\n:nouser\nbob:\nalice:again\ncarol:ok\x01\n", 0o600)
	_, err := LoadCredentials(bad)
	if err == nil {
		t.Fatal("bad file accepted")
	}
	for _, want := range []string{
		bad + ":2: want user:password",
		bad + ":3: empty user name",
		bad + `:4: user "bob" has an empty password`,
		bad + `:5: user "alice" repeats line 1`,
		bad + `:6: password of user "carol" has a control character`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Passwords never appear in messages.
	if strings.Contains(err.Error(), "again") || strings.Contains(err.Error(), "ok\x01") {
		t.Errorf("error quotes a password:\n%v", err)
	}

	open := write("open", "alice:pw\n", 0o644)
	if _, err := LoadCredentials(open); err == nil || !strings.Contains(err.Error(), "chmod 600 "+open) {
		t.Errorf("0644 file: %v", err)
	}
	empty := write("empty", "# nobody\n", 0o600)
	if _, err := LoadCredentials(empty); err == nil || !strings.Contains(err.Error(), "no user:password lines") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := LoadCredentials(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := LoadCredentials(dir); err == nil {
		t.Error("directory accepted")
	}
	if _, err := NewCredentials(map[string]string{"a:b": "x"}); err == nil {
		t.Error("NewCredentials accepted a name with ':'")
	}
}
