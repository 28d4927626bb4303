package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
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

// TestUpEnforcesRules: two `wgmesh up` processes; the book's one rule
// lets a reach b's exposed port 9000 and nothing else. Through a's
// forwards, 9000 answers and 9001 does not; b's `wgmesh status` (table and
// --json) and its metrics count what it dropped from a; a reload that
// removes the rule opens 9001 too.
func TestUpEnforcesRules(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	ms := newMembers(t, dir, "a", "b")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	open, closed := payloadServer(t, []byte("open\n")), payloadServer(t, []byte("closed\n"))
	ctl := func(name string) string { return filepath.Join(dir, "run", name, "wgmesh.sock") }
	b := startUp(t, bin, "b", ctl("b"), "--book", book, "--key", ms[1].keyPath, "--listen-port", "0",
		"--expose", "tcp:9000="+open.String(), "--expose", "tcp:9001="+closed.String(), "--metrics", "127.0.0.1:0")
	a := startUp(t, bin, "a", ctl("a"), "--book", book, "--key", ms[0].keyPath, "--listen-port", "0",
		"--forward", "tcp:127.0.0.1:0=b:9000", "--forward", "tcp:127.0.0.1:0=b:9001")
	for i, p := range []*proc{a, b} {
		ms[i].port = p.waitStatus(t, bin, "start-up", func(st node.Status) bool { return st.ListenPort != 0 }).ListenPort
	}
	to9000, to9001 := boundForward(t, a, "tcp", "b:9000"), boundForward(t, a, "tcp", "b:9001")
	metricsAddr := b.readyAttr(t, "metrics")

	rule := "\n[[rule]]\nfrom = [\"a\"]\nto = [\"b\"]\nports = [\"tcp:9000\"]\n"
	reload := func(serial uint64, rules string) {
		t.Helper()
		tmp := book + ".tmp"
		if err := os.WriteFile(tmp, append(bookText(serial, ms), rules...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, book); err != nil {
			t.Fatal(err)
		}
		for _, p := range []*proc{a, b} {
			p.cmd.Process.Signal(syscall.SIGHUP)
			p.waitStatus(t, bin, fmt.Sprintf("reload to serial %d", serial), func(st node.Status) bool { return st.BookSerial == serial })
		}
	}
	reload(2, rule)
	fetch := func(addr string, timeout time.Duration) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return ""
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		got, _ := io.ReadAll(c)
		return string(got)
	}
	if got := fetch(to9000, 20*time.Second); got != "open\n" {
		t.Errorf("the port the rule opens: got %q", got)
	}
	if got := fetch(to9001, 2*time.Second); got != "" {
		t.Errorf("a port no rule opens answered %q", got)
	}

	st := b.waitStatus(t, bin, "a drop counted", func(st node.Status) bool { return peerStatus(st, "a").Dropped > 0 })
	if st.Rules != 1 || peerStatus(st, "a").DroppedBy["no-rule"] == 0 {
		t.Errorf("b's status: rules %d, drops from a %v", st.Rules, peerStatus(st, "a").DroppedBy)
	}
	code, table, stderr := runCLI(t, "", "status", "--control", b.control)
	if code != 0 || !strings.Contains(table, "access rules 1") || !strings.Contains(table, "DROPPED") || !strings.Contains(table, "(no-rule ") {
		t.Errorf("wgmesh status: exit %d, stderr %q:\n%s", code, stderr, table)
	}
	m := scrape(t, "http://"+metricsAddr+"/metrics")
	if v := m[`wgmesh_peer_dropped_total{peer="a",reason="no-rule"}`]; v == 0 {
		t.Errorf("wgmesh_peer_dropped_total{peer=\"a\",reason=\"no-rule\"} = %v", v)
	}
	if v := m["wgmesh_rules"]; v != 1 {
		t.Errorf("wgmesh_rules = %v", v)
	}
	if strings.Contains(b.stderr.String(), "not enforce") {
		t.Errorf("b still says it does not enforce the rules:\n%s", b.stderr.String())
	}

	reload(3, "")
	if got := fetch(to9001, 20*time.Second); got != "closed\n" {
		t.Errorf("after the rule's removal, 9001: got %q", got)
	}
}
