// Package config reads and writes the configuration file of one node, the
// settings of `wgmesh up` in TOML, as in /etc/wgmesh/NAME.toml:
//
//	book = "home.book.toml"       # or an https:// URL
//	key = "home.key"
//	mode = "netstack"
//	listen_port = 51820
//	forward = ["tcp:127.0.0.1:2222=server:22"]
//
// Every key is the long name of a flag of `wgmesh up`, with "_" for "-"
// (listen_port is --listen-port), and takes the same values: a string,
// an integer, true/false, or an array of strings for the repeatable flags.
// The file is checked as strictly as a peer book: an unknown key, a value
// of the wrong type, a table or a key set twice is refused with FILE:LINE.
// Relative paths (book, key, trusted_signers, state_dir, book_ca,
// socks_auth_file, control, etcd_*) are relative to the file's directory, so a
// directory written by `wgmesh join` can be moved as a whole.
//
// The package knows the keys and their types; what a value means (a
// forward spec, a listen address) is checked by `wgmesh up` as for the flag.
package config

import (
	"bytes"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// MaxSize is the largest configuration file accepted.
const MaxSize = 1 << 20

// File holds the settings of one node. A nil pointer, an empty string or
// a nil slice is a setting the file does not make (the flag's default
// applies). Field comments give the flag each key stands for.
type File struct {
	Book     string `toml:"book"`     // --book: peer book file or https:// URL
	Key      string `toml:"key"`      // --key: private key file (mode 0600)
	Instance string `toml:"instance"` // --instance: names the default control socket and state dir
	Mode     string `toml:"mode"`     // --mode: "netstack" or "tun"

	Interface  string   `toml:"interface"`   // --interface: TUN interface name
	Masquerade *bool    `toml:"masquerade"`  // --masquerade
	ExitNode   string   `toml:"exit_node"`   // --exit-node: a member with exit = true
	ListenPort *int     `toml:"listen_port"` // --listen-port: 0 lets the system choose
	Forward    []string `toml:"forward"`     // --forward: PROTO:HOST:PORT=TARGET:PORT
	Expose     []string `toml:"expose"`      // --expose: PROTO:PORT=HOST:PORT
	Control    string   `toml:"control"`     // --control: control socket path

	TrustedSigners  string `toml:"trusted_signers"`  // --trusted-signers: allowed_signers file
	StateDir        string `toml:"state_dir"`        // --state-dir
	BookPoll        string `toml:"book_poll"`        // --book-poll: a duration such as "1m"
	AllowHTTP       *bool  `toml:"allow_http"`       // --allow-http
	BookCA          string `toml:"book_ca"`          // --book-ca: PEM file
	EtcdCA          string `toml:"etcd_ca"`          // --etcd-ca: PEM file, for an etcd:// book
	EtcdCert        string `toml:"etcd_cert"`        // --etcd-cert: PEM file
	EtcdKey         string `toml:"etcd_key"`         // --etcd-key: PEM file (mode 0600)
	EtcdAuthFile    string `toml:"etcd_auth_file"`   // --etcd-auth-file: user:password file (mode 0600)
	ResolveInterval string `toml:"resolve_interval"` // --resolve-interval: a duration
	Resolver        string `toml:"resolver"`         // --resolver: HOST:PORT
	Registry        string `toml:"registry"`         // --registry: dns://HOST:PORT
	RegistryZone    string `toml:"registry_zone"`    // --registry-zone
	RegistryListen  *int   `toml:"registry_listen"`  // --registry-listen: port

	Metrics       string   `toml:"metrics"`         // --metrics: HOST:PORT or PORT
	Socks         string   `toml:"socks"`           // --socks
	HTTPProxy     string   `toml:"http_proxy"`      // --http-proxy
	SocksAuthFile string   `toml:"socks_auth_file"` // --socks-auth-file
	ProxyAllow    []string `toml:"proxy_allow"`     // --proxy-allow: CIDR prefixes
	DNS           string   `toml:"dns"`             // --dns

	LogLevel string `toml:"log_level"` // --log-level: debug, info, warn or error

	// Path is the file read; Lines maps each key set in it to its line.
	// Both are empty for a File built in code.
	Path  string         `toml:"-"`
	Lines map[string]int `toml:"-"`
}

// pathKeys are the keys holding paths, resolved against the file's
// directory by Load.
var pathKeys = map[string]bool{"book": true, "key": true, "trusted_signers": true, "state_dir": true,
	"book_ca": true, "socks_auth_file": true, "control": true,
	"etcd_ca": true, "etcd_cert": true, "etcd_key": true, "etcd_auth_file": true}

// Setting is one key the file sets, in the form of the flag it stands for.
type Setting struct {
	Key    string   // as in the file, e.g. "listen_port"
	Flag   string   // the flag's name, e.g. "listen-port"
	Values []string // one for a plain flag, each element for a repeatable one
	Line   int      // where the file sets it; 0 for a File built in code
}

// Keys lists every key a file may set, in the order of File's fields.
func Keys() []string {
	var keys []string
	t := reflect.TypeOf(File{})
	for i := range t.NumField() {
		if k := t.Field(i).Tag.Get("toml"); k != "-" {
			keys = append(keys, k)
		}
	}
	return keys
}

// FlagName is the flag a key stands for.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// Settings lists what f sets, in the order of File's fields.
func (f *File) Settings() []Setting {
	var out []Setting
	v := reflect.ValueOf(f).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("toml")
		if key == "-" {
			continue
		}
		var vals []string
		switch fv := v.Field(i); fv.Kind() {
		case reflect.String:
			if fv.String() != "" {
				vals = []string{fv.String()}
			}
		case reflect.Pointer:
			if !fv.IsNil() {
				switch x := fv.Interface().(type) {
				case *int:
					vals = []string{strconv.Itoa(*x)}
				case *bool:
					vals = []string{strconv.FormatBool(*x)}
				}
			}
		case reflect.Slice:
			vals = fv.Interface().([]string)
		}
		if vals != nil {
			out = append(out, Setting{Key: key, Flag: FlagName(key), Values: vals, Line: f.Lines[key]})
		}
	}
	return out
}

// Load reads and checks the file at path and makes its relative paths
// relative to the file's directory. On failure the error is a
// *peerbook.Error listing every problem as FILE:LINE: message.
func Load(path string) (*File, error) {
	data, err := fileutil.ReadFileLimit(path, MaxSize)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	f, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	v := reflect.ValueOf(f).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("toml")
		fv := v.Field(i)
		if !pathKeys[key] || fv.String() == "" || filepath.IsAbs(fv.String()) || strings.Contains(fv.String(), "://") {
			continue
		}
		fv.SetString(filepath.Join(dir, fv.String()))
	}
	return f, nil
}

// InstanceName checks the name of an instance: it names a file, a
// directory and a systemd unit instance, so it is a letter or digit
// followed by up to 63 letters, digits, '-', '_' or '.'.
func InstanceName(s string) error {
	if !instanceRE.MatchString(s) {
		return fmt.Errorf("instance name %q: want a letter or digit followed by up to 63 letters, digits, '-', '_' or '.'", s)
	}
	return nil
}

var instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Parse checks a configuration file. file names it in messages.
func Parse(file string, data []byte) (*File, error) {
	p := &parser{file: file, f: &File{Path: file, Lines: map[string]int{}}}
	if len(data) > MaxSize {
		p.add(0, "the file is %d bytes, over the limit of %d bytes", len(data), MaxSize)
		return nil, p.err()
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	// The decoder reports syntax errors with their position.
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		if de, ok := err.(*toml.DecodeError); ok {
			line, _ := de.Position()
			p.add(line, "invalid TOML: %s", strings.TrimPrefix(de.Error(), "toml: "))
		} else {
			p.add(0, "invalid TOML: %s", strings.TrimPrefix(err.Error(), "toml: "))
		}
		return nil, p.err()
	}
	p.walk(data)
	p.check()
	if len(p.problems) > 0 {
		return nil, p.err()
	}
	return p.f, nil
}

type parser struct {
	file     string
	f        *File
	starts   []int
	problems []peerbook.Problem
}

func (p *parser) add(line int, format string, args ...any) {
	p.problems = append(p.problems, peerbook.Problem{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) err() error { return &peerbook.Error{Problems: p.problems} }

func (p *parser) lineOf(n *unstable.Node) int {
	off := int(n.Raw.Offset)
	line := 1
	for _, s := range p.starts {
		if s > off {
			break
		}
		line++
	}
	return line
}

// walk reads the top-level keys with go-toml's parser, which knows where
// each one was written.
func (p *parser) walk(data []byte) {
	for i, c := range data {
		if c == '\n' {
			p.starts = append(p.starts, i+1)
		}
	}
	fields := map[string]reflect.Value{}
	v := reflect.ValueOf(p.f).Elem()
	for i := range v.NumField() {
		if k := v.Type().Field(i).Tag.Get("toml"); k != "-" {
			fields[k] = v.Field(i)
		}
	}
	var up unstable.Parser
	up.Reset(data)
	for up.NextExpression() {
		e := up.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			it := e.Key()
			it.Next()
			p.add(p.lineOf(it.Node()), "tables are not allowed: a config file is a list of key = value lines (the peer book is a separate file, named by book)")
			return // everything below belongs to the table
		case unstable.KeyValue:
			it := e.Key()
			it.Next()
			kn := it.Node()
			line := p.lineOf(kn)
			key := string(kn.Data)
			if it.Next() {
				p.add(line, "dotted key %q is not allowed; every key is a plain name such as listen_port", key+"."+string(it.Node().Data))
				continue
			}
			fv, ok := fields[key]
			if !ok {
				p.add(line, "unknown key %q%s", key, suggest(key))
				continue
			}
			p.f.Lines[key] = line
			p.set(key, line, fv, e.Value())
		}
	}
}

// suggest names the key meant by a flag spelling or a case mistake.
func suggest(key string) string {
	k := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	for _, known := range Keys() {
		if k == known {
			return fmt.Sprintf("; did you mean %s?", known)
		}
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(Keys(), ", "))
}

func (p *parser) set(key string, line int, fv reflect.Value, val *unstable.Node) {
	switch fv.Kind() {
	case reflect.String:
		if val.Kind != unstable.String {
			p.add(line, "%s: want a string in quotes, got %s", key, kindName(val.Kind))
			return
		}
		fv.SetString(string(val.Data))
	case reflect.Pointer:
		switch fv.Type().Elem().Kind() {
		case reflect.Int:
			if val.Kind != unstable.Integer {
				p.add(line, "%s: want an integer, got %s", key, kindName(val.Kind))
				return
			}
			n, err := strconv.ParseInt(strings.ReplaceAll(string(val.Data), "_", ""), 0, 32)
			if err != nil {
				p.add(line, "%s: %s is not a usable integer", key, val.Data)
				return
			}
			x := int(n)
			fv.Set(reflect.ValueOf(&x))
		case reflect.Bool:
			if val.Kind != unstable.Bool {
				p.add(line, "%s: want true or false, got %s", key, kindName(val.Kind))
				return
			}
			b := string(val.Data) == "true"
			fv.Set(reflect.ValueOf(&b))
		}
	case reflect.Slice:
		if val.Kind != unstable.Array {
			p.add(line, "%s: want an array of strings, e.g. %s = [\"…\"]", key, key)
			return
		}
		list := []string{}
		it := val.Children()
		for it.Next() {
			el := it.Node()
			if el.Kind != unstable.String {
				p.add(p.lineOf(el), "%s: want an array of strings, got %s in it", key, kindName(el.Kind))
				return
			}
			list = append(list, string(el.Data))
		}
		fv.Set(reflect.ValueOf(list))
	}
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "a table"
	default:
		return "a date or time"
	}
}

// check refuses values that no flag would take, where the package knows
// the whole rule.
func (p *parser) check() {
	f := p.f
	if f.Mode != "" && f.Mode != "netstack" && f.Mode != "tun" {
		p.add(f.Lines["mode"], "mode %q: want netstack or tun", f.Mode)
	}
	if f.Instance != "" {
		if err := InstanceName(f.Instance); err != nil {
			p.add(f.Lines["instance"], "%v", err)
		}
	}
	for _, d := range []struct{ key, v string }{{"book_poll", f.BookPoll}, {"resolve_interval", f.ResolveInterval}} {
		if d.v == "" {
			continue
		}
		if x, err := time.ParseDuration(d.v); err != nil || x <= 0 {
			p.add(f.Lines[d.key], "%s %q: want a positive duration such as \"1m\" or \"30s\"", d.key, d.v)
		}
	}
	if f.ListenPort != nil && (*f.ListenPort < 0 || *f.ListenPort > 65535) {
		p.add(f.Lines["listen_port"], "listen_port %d: want 0 (any free port) or 1 to 65535", *f.ListenPort)
	}
	if f.RegistryListen != nil && (*f.RegistryListen < 1 || *f.RegistryListen > 65535) {
		p.add(f.Lines["registry_listen"], "registry_listen %d: want a port from 1 to 65535", *f.RegistryListen)
	}
	switch f.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		p.add(f.Lines["log_level"], "log_level %q: want debug, info, warn or error", f.LogLevel)
	}
	for _, s := range []struct{ key, v string }{{"book", f.Book}, {"key", f.Key}} {
		if _, set := f.Lines[s.key]; set && s.v == "" {
			p.add(f.Lines[s.key], "%s is empty", s.key)
		}
	}
}

// Marshal writes f in the file format, the keys it sets in the order of
// File's fields. Parse(Marshal(f)) sets the same keys to the same values.
func Marshal(f *File) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# wgmesh node configuration: the settings of `wgmesh up`, key = flag name with _ for -.\n")
	v := reflect.ValueOf(f).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("toml")
		fv := v.Field(i)
		if key == "-" || fv.IsZero() {
			continue
		}
		val := fv.Interface()
		if fv.Kind() == reflect.Pointer {
			val = fv.Elem().Interface()
		}
		line, err := toml.Marshal(map[string]any{key: val})
		if err != nil {
			return nil, fmt.Errorf("config: %s: %w", key, err)
		}
		b.Write(line)
	}
	return b.Bytes(), nil
}

// Write writes f to path atomically, mode 0644: the file holds paths and
// settings, no secret.
func Write(path string, f *File) error {
	data, err := Marshal(f)
	if err != nil {
		return err
	}
	return fileutil.WriteFileAtomic(path, data, 0o644)
}
