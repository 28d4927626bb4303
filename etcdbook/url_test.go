package etcdbook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	good := map[string]Target{
		"etcd://127.0.0.1:2379/wgmesh":                 {[]string{"127.0.0.1:2379"}, "/wgmesh/"},
		"ETCD://a.example:2379,[::1]:2379/w/prod/":     {[]string{"a.example:2379", "[::1]:2379"}, "/w/prod/"},
		"etcd://h1:1,h2:2,h3:3/fleet.v2/x_y-z":         {[]string{"h1:1", "h2:2", "h3:3"}, "/fleet.v2/x_y-z/"},
		"etcd://localhost:2379/a":                      {[]string{"localhost:2379"}, "/a/"},
		"etcd://10.0.0.1:2379,10.0.0.2:2379/wgmesh/eu": {[]string{"10.0.0.1:2379", "10.0.0.2:2379"}, "/wgmesh/eu/"},
	}
	for in, want := range good {
		got, err := ParseURL(in)
		if err != nil || strings.Join(got.Endpoints, ",") != strings.Join(want.Endpoints, ",") || got.Prefix != want.Prefix {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"https://h:1/x":           "not an etcd:// address",
		"etcd://h:1":              "no key prefix",
		"etcd://h:1/":             "no key prefix",
		"etcd://h/x":              "not HOST:PORT",
		"etcd://h:0/x":            "port must be",
		"etcd://h:99999/x":        "port must be",
		"etcd://h:1,/x":           "not HOST:PORT",
		"etcd://u:p@h:1/x":        "credentials",
		"etcd://h:1/a//b":         "segments",
		"etcd://h:1/a/../b":       "segments",
		"etcd://h:1/a b":          "segments",
		"etcd://h:1/a\nb":         "segments",
		"etcd://h:1/caf\u00e9":    "segments",
		"etcd://h:1/x?user=admin": "segments",
	}
	for in, want := range bad {
		if _, err := ParseURL(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q): %v, want an error with %q", in, err, want)
		}
	}
}

func TestConnectRefusesPlainHTTPOffLoopback(t *testing.T) {
	tg, _ := ParseURL("etcd://127.0.0.1:2379,10.0.0.1:2379/x")
	if _, err := Connect(tg, Options{}); err == nil || !strings.Contains(err.Error(), "10.0.0.1:2379: plain http") {
		t.Fatalf("plain http off loopback: %v", err)
	}
	s, err := Connect(tg, Options{AllowHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestAuthFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	u, p, err := readAuthFile(write("ok", "fleet:s3cr:et\n", 0o600))
	if err != nil || u != "fleet" || p != "s3cr:et" {
		t.Fatalf("got %q %q %v", u, p, err)
	}
	for name, data := range map[string]string{"nocolon": "fleetsecret\n", "nouser": ":secret\n", "nopass": "fleet:\n", "empty": ""} {
		_, _, err := readAuthFile(write(name, data, 0o600))
		if err == nil || !strings.Contains(err.Error(), "want one line user:password") {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	if _, _, err := readAuthFile(write("loose", "fleet:secret\n", 0o644)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable: %v", err)
	}
}

func TestParseHead(t *testing.T) {
	h := Head{Serial: 42}
	h.Digest[0] = 0xab
	got, err := ParseHead(h.Marshal())
	if err != nil || got != h {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "wgmesh-etcd-book 2\nserial 1\nrecords 00\n", "wgmesh-etcd-book 1\nserial x\nrecords " + strings.Repeat("0", 64) + "\n", "wgmesh-etcd-book 1\nserial 1\nrecords 00\n"} {
		if _, err := ParseHead([]byte(bad)); err == nil {
			t.Errorf("ParseHead(%q) accepted", bad)
		}
	}
}
