package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBookCheckRules: book check accepts a book with access rules and
// prints every rule problem as FILE:LINE.
func TestBookCheckRules(t *testing.T) {
	good := "testdata/good/rules.toml"
	code, out, stderr := runCLI(t, "", "book", "check", good)
	if code != 0 || !strings.Contains(out, "ok, 3 members, serial 3, 4 access rules\n") {
		t.Errorf("good book with rules: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for file, want := range map[string][]string{
		"testdata/bad/rule-unknown-member.toml": {
			`:26: rule #1: from "delta" is not a member of the book`,
			`:27: rule #1: to "gama" is not a member of the book`,
		},
		"testdata/bad/rule-port-range.toml":    {`:28: rule #1: ports "tcp:8100-8000": the range starts after it ends; write "tcp:8000-8100"`},
		"testdata/bad/rule-never-matches.toml": {`:25: rule #1 can never match`, `:35: rule #3 can never match`},
		"testdata/bad/rule-unknown-key.toml":   {`:29: rule #1: unknown key "port" (did you mean "ports"?)`},
	} {
		code, _, stderr := runCLI(t, "", "book", "check", file)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", file, code)
		}
		for _, w := range want {
			if !strings.Contains(stderr, file+w) {
				t.Errorf("%s: stderr lacks %q:\n%s", file, file+w, stderr)
			}
		}
	}
}

// TestUpWarnsRulesNotEnforced: until the filter is wired into the
// datapath, a node whose book has rules says that it does not enforce them,
// at start and after a reload.
func TestUpWarnsRulesNotEnforced(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	ms := newMembers(t, dir, "a", "b")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	rule := "\n[[rule]]\nfrom = [\"a\"]\nto = [\"b\"]\nports = [\"tcp:22\"]\n"
	if err := os.WriteFile(book, append(bookText(1, ms), rule...), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startUp(t, bin, "a", filepath.Join(dir, "a.sock"), "--book", book, "--key", ms[0].keyPath,
		"--listen-port", "0", "--state-dir", filepath.Join(dir, "state"))
	p.readyAttr(t, "serial")
	const warning = "access rules, which this version checks but does not enforce yet"
	if got := strings.Count(p.stderr.String(), warning); got != 1 {
		t.Fatalf("%d warnings at start, want 1:\n%s", got, p.stderr.String())
	}
	if err := os.WriteFile(book, append(bookText(2, ms), rule...), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.stderr.String(), warning) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no warning after the reload:\n%s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
