package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/peerbook"
)

func TestParseSettings(t *testing.T) {
	src := `# home
book = "book.toml"
key = 'home.key'
mode = "tun"
listen_port = 0
masquerade = false
forward = [
  "tcp:127.0.0.1:2222=server:22",
  "udp:127.0.0.1:5353=10.42.0.3:53",
]
book_poll = "30s"
metrics = "a\"b"
`
	f, err := Parse("home.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{
		{Key: "book", Flag: "book", Values: []string{"book.toml"}, Line: 2},
		{Key: "key", Flag: "key", Values: []string{"home.key"}, Line: 3},
		{Key: "mode", Flag: "mode", Values: []string{"tun"}, Line: 4},
		{Key: "masquerade", Flag: "masquerade", Values: []string{"false"}, Line: 6},
		{Key: "listen_port", Flag: "listen-port", Values: []string{"0"}, Line: 5},
		{Key: "forward", Flag: "forward", Values: []string{"tcp:127.0.0.1:2222=server:22", "udp:127.0.0.1:5353=10.42.0.3:53"}, Line: 7},
		{Key: "book_poll", Flag: "book-poll", Values: []string{"30s"}, Line: 11},
		{Key: "metrics", Flag: "metrics", Values: []string{`a"b`}, Line: 12},
	}
	if got := f.Settings(); !reflect.DeepEqual(got, want) {
		t.Errorf("settings:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseRefusesWithLines(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"book = \"b\"\nlisten-port = 1\n", `c.toml:2: unknown key "listen-port"; did you mean listen_port?`},
		{"book = \"b\"\n\nbogus = 1\n", `c.toml:3: unknown key "bogus" (known keys: book, key, instance,`},
		{"listen_port = \"51820\"\n", `c.toml:1: listen_port: want an integer, got a string`},
		{"masquerade = 1\n", `c.toml:1: masquerade: want true or false, got an integer`},
		{"key = 1\n", `c.toml:1: key: want a string in quotes, got an integer`},
		{"forward = \"tcp:1=a:1\"\n", `c.toml:1: forward: want an array of strings`},
		{"forward = [\n  1,\n]\n", `c.toml:2: forward: want an array of strings, got an integer in it`},
		{"mode = \"tap\"\n", `c.toml:1: mode "tap": want netstack or tun`},
		{"book = \"a\"\nbook = \"b\"\n", `c.toml:2: invalid TOML:`},
		{"book = \"a\"\n[peer]\nname = \"x\"\n", `c.toml:2: tables are not allowed`},
		{"x.y = 1\n", `c.toml:1: dotted key "x.y" is not allowed`},
		{"book_poll = \"soon\"\n", `c.toml:1: book_poll "soon": want a positive duration`},
		{"instance = \"../etc\"\n", `c.toml:1: instance name "../etc"`},
		{"listen_port = 70000\n", `c.toml:1: listen_port 70000: want 0`},
		{"book = \"a\"\nkey = \"\"\n", `c.toml:2: key is empty`},
	} {
		_, err := Parse("c.toml", []byte(tc.src))
		var perr *peerbook.Error
		if !errors.As(err, &perr) {
			t.Errorf("%q: error %v, want a *peerbook.Error", tc.src, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q:\n got %s\nwant %s…", tc.src, err, tc.want)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	port, masq := 0, true
	f := &File{Book: "book.toml", Key: "home.key", Instance: "home", ListenPort: &port, Masquerade: &masq,
		Forward: []string{"tcp:127.0.0.1:1=a:1", `odd"quote`}, BookPoll: "5m"}
	data, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse("m.toml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	g.Path, g.Lines = "", nil
	if !reflect.DeepEqual(f, g) {
		t.Errorf("round trip:\n got %+v\nwant %+v\n%s", g, f, data)
	}
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "home.toml")
	src := "book = \"book.toml\"\nkey = \"/etc/wgmesh/home.key\"\nstate_dir = \"state\"\ntrusted_signers = \"signers\"\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Book != filepath.Join(dir, "book.toml") || f.Key != "/etc/wgmesh/home.key" ||
		f.StateDir != filepath.Join(dir, "state") || f.TrustedSigners != filepath.Join(dir, "signers") {
		t.Errorf("paths: %+v", f)
	}
	if err := os.WriteFile(path, []byte("book = \"https://example.com/book.toml\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := Load(path); err != nil || f.Book != "https://example.com/book.toml" {
		t.Errorf("URL: %v %+v", err, f)
	}
}

func TestWriteLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.toml")
	if err := Write(path, &File{Book: "/b.toml", Key: "/k"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%v %v", err, fi)
	}
	if f, err := Load(path); err != nil || f.Book != "/b.toml" || f.Key != "/k" {
		t.Errorf("%v %+v", err, f)
	}
}
