package peerbook

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	keyA = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
	keyB = "MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo="
	keyC = "EG5s6psBQfTap3EclLADZLDBk3NMZZrFw0sFI2dngHg="
)

// minimal is the smallest valid book; rule tests append to or edit it.
const minimal = `format = 1

[mesh]
networks = ["10.42.0.0/16"]

[[peer]]
name = "a"
public_key = "` + keyA + `"
addresses = ["10.42.0.1"]
`

func TestParseDefaults(t *testing.T) {
	b, err := Parse("book.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if b.Serial != 0 || b.Mesh.Domain != "mesh" || b.Mesh.ListenPort != 51820 || b.Mesh.MTU != 1420 || b.Mesh.PersistentKeepalive != 25 {
		t.Errorf("defaults not applied: %+v", b)
	}
	if b.Source != "book.toml" || len(b.Peers) != 1 || b.Peers[0].Line != 6 {
		t.Errorf("source/line: %+v", b)
	}
	if got := b.ListenPortOf(&b.Peers[0]); got != 51820 {
		t.Errorf("ListenPortOf = %d", got)
	}
}

// problems parses text and returns its problems as "LINE: message".
func problems(t *testing.T, text string) []string {
	t.Helper()
	_, err := Parse("book.toml", []byte(text))
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T: %v", err, err)
	}
	var out []string
	for _, p := range e.Problems {
		if p.File != "book.toml" {
			t.Errorf("problem names file %q", p.File)
		}
		out = append(out, fmt.Sprintf("%d: %s", p.Line, p.Msg))
	}
	return out
}

func peerWith(name, key, extra string) string {
	return fmt.Sprintf("\n[[peer]]\nname = %q\npublic_key = %q\n%s", name, key, extra)
}

// TestParseRules checks one rule per case: the book must be refused with a
// problem at the given line whose message contains want.
func TestParseRules(t *testing.T) {
	tests := []struct {
		name string
		text string
		line int
		want string
	}{
		{"unknown top key", minimal + "colour = 1\n", 10, `unknown key "colour"`},
		{"unknown mesh key", strings.Replace(minimal, "[mesh]\n", "[mesh]\nmut = 1400\n", 1), 4, `unknown key "mut" (did you mean "mtu"?)`},
		{"unknown peer key", minimal + "Name = \"x\"\n", 10, `peer "a": unknown key "Name" (did you mean "name"?)`},
		{"format missing", strings.Replace(minimal, "format = 1\n", "", 1), 0, "format is missing"},
		{"format 2", strings.Replace(minimal, "format = 1", "format = 2", 1), 1, "format 2 is newer"},
		{"format 0", strings.Replace(minimal, "format = 1", "format = 0", 1), 1, "format 0 does not exist"},
		{"format float", strings.Replace(minimal, "format = 1", "format = 1.0", 1), 1, "format must be the integer 1, not a float"},
		{"serial negative", "serial = -5\n" + minimal, 1, "serial must be 0 or more, got -5"},
		{"domain", strings.Replace(minimal, "[mesh]\n", "[mesh]\ndomain = \"a..b\"\n", 1), 4, `mesh.domain "a..b" is not a DNS name`},
		{"networks missing", strings.Replace(minimal, "networks = [\"10.42.0.0/16\"]", "", 1), 3, "mesh.networks is missing"},
		{"networks empty", strings.Replace(minimal, `["10.42.0.0/16"]`, `[]`, 1), 4, "mesh.networks is empty"},
		{"network non-canonical", strings.Replace(minimal, `"10.42.0.0/16"`, `"10.42.0.5/16"`, 1), 4, `write "10.42.0.0/16"`},
		{"network /0", strings.Replace(minimal, `"10.42.0.0/16"`, `"10.42.0.0/16", "::/0"`, 1), 4, `mesh network "::/0" covers every address`},
		{"networks overlap", strings.Replace(minimal, `"10.42.0.0/16"`, `"10.42.0.0/16", "10.0.0.0/8"`, 1), 4, "mesh networks 10.0.0.0/8 and 10.42.0.0/16 overlap"},
		{"listen_port 0", strings.Replace(minimal, "[mesh]\n", "[mesh]\nlisten_port = 0\n", 1), 4, "mesh.listen_port must be between 1 and 65535, got 0"},
		{"mtu too big", strings.Replace(minimal, "[mesh]\n", "[mesh]\nmtu = 65536\n", 1), 4, "mesh.mtu must be between 576 and 65535, got 65536"},
		{"mtu ipv6 min", strings.Replace(minimal, "[mesh]\nnetworks = [\"10.42.0.0/16\"]", "[mesh]\nnetworks = [\"10.42.0.0/16\", \"fd42::/64\"]\nmtu = 1279", 1), 5, "at least 1280"},
		{"keepalive", strings.Replace(minimal, "[mesh]\n", "[mesh]\npersistent_keepalive = -1\n", 1), 4, "mesh.persistent_keepalive must be between 0 and 65535, got -1"},
		{"no peers", strings.Split(minimal, "\n[[peer]]")[0], 0, "the book has no members"},
		{"name missing", minimal + peerWith("", keyB, "addresses = [\"10.42.0.2\"]\n")[:1] + "[[peer]]\npublic_key = \"" + keyB + "\"\naddresses = [\"10.42.0.2\"]\n", 11, "peer #2: name is missing"},
		{"name label", minimal + peerWith("b_1", keyB, "addresses = [\"10.42.0.2\"]\n"), 12, `peer #2: name "b_1" is not a DNS label`},
		{"name hyphen end", minimal + peerWith("b-", keyB, "addresses = [\"10.42.0.2\"]\n"), 12, `name "b-" is not a DNS label`},
		{"name 64", minimal + peerWith(strings.Repeat("b", 64), keyB, "addresses = [\"10.42.0.2\"]\n"), 12, "is not a DNS label"},
		{"name case dup", minimal + peerWith("A", keyB, "addresses = [\"10.42.0.2\"]\n"), 12, `peer "A": name repeats peer "a" (line 6)`},
		{"name domain", minimal + peerWith("MESH", keyB, "addresses = [\"10.42.0.2\"]\n"), 12, `name equals the mesh domain "mesh"`},
		{"key missing", minimal + "\n[[peer]]\nname = \"b\"\naddresses = [\"10.42.0.2\"]\n", 11, `peer "b": public_key is missing`},
		{"key dup", minimal + peerWith("b", keyA, "addresses = [\"10.42.0.2\"]\n"), 13, `public_key is already used by peer "a" (line 6)`},
		{"key padding bits", minimal + peerWith("b", keyB[:42]+"p=", "addresses = [\"10.42.0.2\"]\n"), 13, "not strict base64"},
		{"key url-safe", minimal + peerWith("b", strings.ReplaceAll(keyB, "/", "_"), "addresses = [\"10.42.0.2\"]\n"), 13, "not a base64 character"},
		{"key zero", minimal + peerWith("b", strings.Repeat("A", 43)+"=", "addresses = [\"10.42.0.2\"]\n"), 13, "all zeros"},
		{"key 33 bytes", minimal + peerWith("b", keyB+"AAAA", "addresses = [\"10.42.0.2\"]\n"), 13, "44 characters"},
		{"addresses missing", minimal + peerWith("b", keyB, ""), 11, `peer "b": addresses is missing`},
		{"address outside", minimal + peerWith("b", keyB, "addresses = [\"10.9.0.2\"]\n"), 14, `address 10.9.0.2 is outside the mesh networks (10.42.0.0/16); pick an address inside one of them`},
		{"address dup", minimal + peerWith("b", keyB, "addresses = [\"10.42.0.1\"]\n"), 14, `address 10.42.0.1 is already used by peer "a" (line 6)`},
		{"address twice", minimal + peerWith("b", keyB, "addresses = [\"10.42.0.2\", \"10.42.0.2\"]\n"), 14, `address 10.42.0.2 is listed twice`},
		{"address prefix", minimal + peerWith("b", keyB, "addresses = [\"10.42.0.2/16\"]\n"), 14, `must be a single IP without a prefix length; write "10.42.0.2"`},
		{"address network", minimal + peerWith("b", keyB, "addresses = [\"10.42.0.0\"]\n"), 14, "network address of 10.42.0.0/16"},
		{"address broadcast", minimal + peerWith("b", keyB, "addresses = [\"10.42.255.255\"]\n"), 14, "broadcast address of 10.42.0.0/16"},
		{"address type", minimal + peerWith("b", keyB, "addresses = \"10.42.0.2\"\n"), 14, `addresses must be an array of strings, e.g. ["10.42.0.2"], not a single string`},
		{"address element type", minimal + peerWith("b", keyB, "addresses = [\n  \"10.42.0.2\",\n  42,\n]\n"), 16, "element 2 must be a string"},
		{"endpoint no port", minimal + "endpoint = \"a.example.com\"\n", 10, `endpoint "a.example.com" has no port`},
		{"endpoint port 0", minimal + "endpoint = \"1.2.3.4:0\"\n", 10, "port must be between 1 and 65535"},
		{"endpoint port big", minimal + "endpoint = \"1.2.3.4:65536\"\n", 10, `port "65536" must be a number between 1 and 65535`},
		{"endpoint v6 brackets", minimal + "endpoint = \"2001:db8::1:51820\"\n", 10, `"[2001:db8::1]:51820"`},
		{"endpoint v4 brackets", minimal + "endpoint = \"[1.2.3.4]:51820\"\n", 10, "only IPv6 addresses go in brackets"},
		{"endpoint scheme", minimal + "endpoint = \"udp://1.2.3.4:5\"\n", 10, "must not have a scheme"},
		{"endpoint path", minimal + "endpoint = \"1.2.3.4:5/x\"\n", 10, "must not have a path"},
		{"endpoint injection", minimal + "endpoint = \"1.2.3.4:1\\nallowed_ip=0.0.0.0/0\"\n", 10, `endpoint "1.2.3.4:1\nallowed_ip=0.0.0.0/0" contains control character U+000A`},
		{"endpoint bad host", minimal + "endpoint = \"1.2.3.999:5\"\n", 10, "neither an IP address nor a valid hostname"},
		{"endpoint zone", minimal + "endpoint = \"[fe80::1%eth0]:5\"\n", 10, "zone"},
		{"endpoint type", minimal + "endpoint = 51820\n", 10, "endpoint must be a string"},
		{"listen_port", minimal + "listen_port = 65536\n", 10, "listen_port must be between 1 and 65535, got 65536"},
		{"subnet holds several endpoints", minimal + "subnets = [\"198.51.100.0/24\"]\n" +
			peerWith("b", keyB, "addresses = [\"10.42.0.2\"]\nendpoint = \"198.51.100.7:51820\"\n") +
			peerWith("c", keyC, "addresses = [\"10.42.0.3\"]\nendpoint = \"198.51.100.9:51820\"\n"), 10,
			`subnet 198.51.100.0/24 contains the endpoint 198.51.100.7 of peer "b" (line 16) (and 1 more member endpoints)`},
		{"subnet non-canonical", minimal + "subnets = [\"192.168.1.1/24\"]\n", 10, `subnet "192.168.1.1/24" is not canonical: it has host bits set; write "192.168.1.0/24"`},
		{"subnet /0", minimal + "subnets = [\"0.0.0.0/0\"]\n", 10, "covers every address"},
		{"subnet in mesh", minimal + "subnets = [\"10.42.9.0/24\"]\n", 10, "overlaps mesh network 10.42.0.0/16"},
		{"subnet own overlap", minimal + "subnets = [\"192.168.0.0/16\", \"192.168.1.0/24\"]\n", 10, "subnets 192.168.0.0/16 and 192.168.1.0/24 overlap"},
		{"subnet other peer", minimal + "subnets = [\"192.168.1.0/24\"]\n" + peerWith("b", keyB, "addresses = [\"10.42.0.2\"]\nsubnets = [\"192.168.0.0/16\"]\n"), 16, `peer "b": subnet 192.168.0.0/16 overlaps subnet 192.168.1.0/24 of peer "a" (line 10)`},
		{"subnet same route", minimal + "subnets = [\"192.168.1.0/24\"]\n" + peerWith("b", keyB, "addresses = [\"10.42.0.2\"]\nsubnets = [\"192.168.1.0/24\"]\n"), 16, `subnet 192.168.1.0/24 is also claimed by peer "a" (line 10)`},
		{"registry type", minimal + "registry = \"true\"\n", 10, "registry must be true or false, not a string"},
		{"relay type", minimal + "relay = 1\n", 10, "relay must be true or false, not an integer"},
		{"control char", minimal + "# \x01\n", 10, "control character U+0001 at column 3"},
		{"del char", "format = 1 # \x7f\n" + minimal[11:], 1, "control character U+007F"},
		{"invalid utf-8", minimal + "# \xc3\x28\n", 10, "invalid UTF-8"},
		{"syntax", minimal + "name = \n", 10, "invalid TOML"},
		{"duplicate key", minimal + "name = \"b\"\n", 10, `key "name" is set twice`},
		{"mesh not table", "mesh = 1\n" + strings.Replace(minimal, "[mesh]\nnetworks = [\"10.42.0.0/16\"]\n", "", 1), 1, "mesh must be a table"},
		{"peer not array", strings.Replace(minimal, "[[peer]]", "[peer]", 1), 6, "peer must be an array of tables"},
		{"inline peer", `format = 1
[mesh]
networks = ["10.42.0.0/16"]
peer = []
`, 4, `unknown key "peer"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := problems(t, tt.text)
			for _, p := range got {
				if p == fmt.Sprintf("%d: %s", tt.line, p[strings.Index(p, ": ")+2:]) && strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("want a problem at line %d containing %q, got:\n%s", tt.line, tt.want, strings.Join(got, "\n"))
		})
	}
}

// TestParseAccepts lists spellings that are valid and must stay so.
func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, text string
		check      func(*Book) bool
	}{
		{"ipv6 endpoint", minimal + "endpoint = \"[2001:db8::1]:51820\"\n", func(b *Book) bool {
			ap, ok := b.Peers[0].Endpoint.Addr()
			return ok && ap == netip.MustParseAddrPort("[2001:db8::1]:51820")
		}},
		{"hostname endpoint", minimal + "endpoint = \"a-1.example.com.:443\"\n", func(b *Book) bool {
			return b.Peers[0].Endpoint == Endpoint{Host: "a-1.example.com.", Port: 443}
		}},
		{"listen port from endpoint", minimal + "endpoint = \"1.2.3.4:4000\"\n", func(b *Book) bool { return b.ListenPortOf(&b.Peers[0]) == 4000 }},
		{"uppercase name", strings.Replace(minimal, `name = "a"`, `name = "Web-01"`, 1), func(b *Book) bool {
			p, ok := b.PeerByName("web-01.MESH.")
			return ok && p.Name == "Web-01"
		}},
		{"63 char name", strings.Replace(minimal, `name = "a"`, `name = "`+strings.Repeat("x", 63)+`"`, 1), nil},
		{"numeric name", strings.Replace(minimal, `name = "a"`, `name = "42"`, 1), nil},
		{"slash 31 has no network address", strings.Replace(strings.Replace(minimal, "10.42.0.0/16", "10.42.0.0/31", 1), "10.42.0.1", "10.42.0.0", 1), nil},
		{"bom and crlf", "\xef\xbb\xbf" + strings.ReplaceAll(minimal, "\n", "\r\n"), nil},
		{"tabs", strings.Replace(minimal, "name = ", "name =\t", 1), nil},
		{"inline tables", `format = 1
mesh = { networks = ["10.42.0.0/16"], mtu = 1280 }
peer = [
  { name = "a", public_key = "` + keyA + `", addresses = ["10.42.0.1"] },
  { name = "b", public_key = "` + keyB + `", addresses = ["10.42.0.2"], relay = true },
]
`, func(b *Book) bool {
			return len(b.Peers) == 2 && b.Peers[1].Relay && b.Peers[1].Line == 5 && b.Mesh.MTU == 1280
		}},
		{"dotted keys", `format = 1
mesh.networks = ["10.42.0.0/16"]
[[peer]]
name = "a"
public_key = "` + keyA + `"
addresses = ["10.42.0.1"]
`, nil},
		{"keepalive off", strings.Replace(minimal, "[mesh]\n", "[mesh]\npersistent_keepalive = 0\n", 1), func(b *Book) bool { return b.Mesh.PersistentKeepalive == 0 }},
		{"serial", "serial = 9223372036854775807\n" + minimal, func(b *Book) bool { return b.Serial == 1<<63-1 }},
		// The kernel never routes loopback through an interface, so a
		// loopback subnet cannot capture loopback endpoints.
		{"loopback subnet with loopback endpoints", minimal + "endpoint = \"127.0.0.1:51820\"\nsubnets = [\"127.0.0.0/8\", \"::1/128\"]\n" +
			peerWith("b", keyB, "addresses = [\"10.42.0.2\"]\nendpoint = \"127.0.0.1:51821\"\n") +
			peerWith("c", keyC, "addresses = [\"10.42.0.3\"]\nendpoint = \"[::1]:51822\"\n"), nil},
		{"endpoint next to a subnet", minimal + "endpoint = \"192.168.2.1:51820\"\nsubnets = [\"192.168.1.0/24\", \"192.168.3.0/24\"]\n", nil},
		{"subnets cover all but multicast", minimal + "subnets = [\"128.0.0.0/2\", \"192.0.0.0/3\", \"::/1\", \"8000::/2\"]\n" +
			peerWith("b", keyB, "addresses = [\"10.42.0.2\"]\nsubnets = [\"c000::/3\", \"e000::/4\", \"f000::/5\", \"f800::/6\", \"fc00::/7\", \"fe00::/8\"]\n"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse("book.toml", []byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, b)
			if tt.check != nil && !tt.check(b) {
				t.Errorf("unexpected book: %+v", b)
			}
		})
	}
}

// TestEveryProblemReported: the bad books are only useful if one mistake
// does not hide the others.
func TestEveryProblemReported(t *testing.T) {
	text := minimal + "colour = 1\nendpoint = \"x\"\n" + peerWith("A", keyA, "addresses = [\"10.42.0.1\", \"10.9.0.1\"]\nsubnets = [\"10.42.0.0/24\"]\n")
	got := problems(t, text)
	if len(got) != 7 {
		t.Fatalf("want 7 problems, got %d:\n%s", len(got), strings.Join(got, "\n"))
	}
	last := -1
	for _, p := range got {
		var line int
		fmt.Sscanf(p, "%d:", &line)
		if line < last {
			t.Errorf("problems not in line order:\n%s", strings.Join(got, "\n"))
		}
		last = line
	}
}

func TestOversized(t *testing.T) {
	data := make([]byte, MaxSize+1)
	for i := range data {
		data[i] = ' '
	}
	_, err := Parse("big.toml", data)
	if err == nil || !strings.Contains(err.Error(), "over the limit") || !strings.HasPrefix(err.Error(), "big.toml: ") {
		t.Fatalf("err = %v", err)
	}

	path := filepath.Join(t.TempDir(), "big.toml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Load refuses it before reading it whole, naming the file.
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+" is larger than the limit of 16777216 bytes") {
		t.Fatalf("Load: err = %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want wrapping os.ErrNotExist", err)
	}
}

// bigBook builds a valid book of n members, each with a LAN.
func bigBook(n int) *Book {
	b := &Book{Format: 1, Serial: 1, Mesh: Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		ListenPort: 51820, MTU: 1420, PersistentKeepalive: 25,
	}}
	for i := 0; i < n; i++ {
		var k Key
		k[0], k[1], k[2] = byte(i), byte(i>>8), 1
		p := Peer{
			Name:      fmt.Sprintf("m%d", i),
			PublicKey: k,
			Addresses: []netip.Addr{ipv4(10<<24 + uint32(i) + 1)},
			Subnets:   []netip.Prefix{netip.PrefixFrom(ipv4(172<<24|16<<16+uint32(i)<<4), 28)},
		}
		if i%2 == 0 {
			p.Endpoint = Endpoint{Host: fmt.Sprintf("m%d.example.com", i), Port: 51820}
		}
		b.Peers = append(b.Peers, p)
	}
	return b
}

func ipv4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func TestTenThousandMembers(t *testing.T) {
	b := bigBook(10000)
	text := Marshal(b)
	start := time.Now()
	got, err := Parse("big.toml", text)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("parsing 10000 members took %v", d)
	}
	if len(got.Peers) != 10000 {
		t.Fatalf("%d peers", len(got.Peers))
	}
	// A conflict at the very end is found and located.
	text = append(text, []byte(peerWith("late", keyA, "addresses = [\"10.0.0.1\"]\n"))...)
	_, err = Parse("big.toml", text)
	if err == nil || !strings.Contains(err.Error(), `address 10.0.0.1 is already used by peer "m0" (line 11)`) {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkParse10000(b *testing.B) {
	text := Marshal(bigBook(10000))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := Parse("big.toml", text); err != nil {
			b.Fatal(err)
		}
	}
}
