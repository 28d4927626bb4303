package peerbook

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// wqConfig is one wg-quick file as far as a peer book can use it.
type wqConfig struct {
	file   string // as given, for messages
	member string // file name without directory and ".conf"

	ifaceLine  int
	priv       *PrivateKey
	addrs      []netip.Prefix // as written, host bits included
	addrLines  []int
	listenPort uint16
	mtu        int
	mtuLine    int
	peers      []wqPeer
}

type wqPeer struct {
	line       int // of the [Peer] header
	key        Key
	hasKey     bool
	allowed    []netip.Prefix // masked
	allowLines []int
	endpoint   Endpoint
	epLine     int
	keepalive  int
}

// wgQuickIgnored are wg-quick keys that configure the machine rather than
// the mesh. They are dropped with a note, since a peer book has no place for
// them and the mesh works without them.
var wgQuickIgnored = map[string]string{
	"dns":        "set the resolver on the machine itself",
	"table":      "wgmesh manages the routes of mesh networks and subnets itself",
	"preup":      "run it outside wgmesh",
	"postup":     "run it outside wgmesh",
	"predown":    "run it outside wgmesh",
	"postdown":   "run it outside wgmesh",
	"saveconfig": "wgmesh never writes back its configuration",
	"fwmark":     "wgmesh does not set a firewall mark",
}

// parseWGQuick reads the subset of wg-quick(8) syntax that configs use:
// [Interface] and [Peer] sections of "Key = Value" lines, '#' comments,
// case-insensitive keys, comma-separated lists.
func parseWGQuick(file string, data []byte, errs, notes *[]Problem) *wqConfig {
	cfg := &wqConfig{file: file, member: strings.TrimSuffix(filepath.Base(file), ".conf")}
	bad := func(line int, format string, args ...any) {
		*errs = append(*errs, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	note := func(line int, format string, args ...any) {
		*notes = append(*notes, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if !validLabel(cfg.member) {
		bad(0, "member name %q (the file name without .conf) is not a DNS label; rename the file to letters, digits and hyphens, e.g. home.conf", cfg.member)
	}

	section := ""
	var peer *wqPeer
	for n, raw := range strings.Split(string(data), "\n") {
		line := n + 1
		if i := strings.IndexByte(raw, '#'); i >= 0 {
			raw = raw[:i]
		}
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		if hasControl(s) {
			bad(line, "control character in line; wg-quick files are plain text")
			continue
		}
		if strings.HasPrefix(s, "[") {
			switch strings.ToLower(s) {
			case "[interface]":
				if cfg.ifaceLine != 0 {
					bad(line, "second [Interface] section (the first is at line %d); a file describes one machine", cfg.ifaceLine)
				}
				section, cfg.ifaceLine = "interface", line
			case "[peer]":
				section = "peer"
				cfg.peers = append(cfg.peers, wqPeer{line: line})
				peer = &cfg.peers[len(cfg.peers)-1]
			default:
				bad(line, "unknown section %s; wg-quick files have [Interface] and [Peer]", s)
				section = "unknown"
			}
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			bad(line, "expected Key = Value")
			continue
		}
		key, val := strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch section {
		case "":
			bad(line, "%s before any [Interface] or [Peer] section", strings.TrimSpace(k))
		case "interface":
			parseInterfaceKey(cfg, line, strings.TrimSpace(k), key, val, bad, note)
		case "peer":
			parsePeerKey(peer, line, strings.TrimSpace(k), key, val, bad, note)
		}
	}
	if cfg.ifaceLine == 0 {
		bad(0, "no [Interface] section; each file must be the configuration of one machine")
	}
	if cfg.ifaceLine != 0 && len(cfg.addrs) == 0 {
		bad(cfg.ifaceLine, "[Interface] has no Address; the member's mesh address comes from it")
	}
	return cfg
}

type reportFunc func(line int, format string, args ...any)

func parseInterfaceKey(cfg *wqConfig, line int, name, key, val string, bad, note reportFunc) {
	switch key {
	case "privatekey":
		k, err := ParsePrivateKey(val)
		if err != nil {
			bad(line, "%v", err)
			return
		}
		cfg.priv = &k
	case "address":
		for _, s := range splitList(val) {
			p, err := parseWGPrefix(s)
			if err != nil {
				bad(line, "Address %q is not an IP address or prefix", s)
				continue
			}
			cfg.addrs = append(cfg.addrs, p)
			cfg.addrLines = append(cfg.addrLines, line)
		}
	case "listenport":
		p, ok := parsePort(val)
		if !ok {
			bad(line, "ListenPort %q must be a number between 1 and 65535", val)
			return
		}
		cfg.listenPort = p
	case "mtu":
		n, err := strconv.Atoi(val)
		if err != nil || n < 576 || n > 65535 {
			bad(line, "MTU %q must be a number between 576 and 65535", val)
			return
		}
		cfg.mtu, cfg.mtuLine = n, line
	default:
		if why, ok := wgQuickIgnored[key]; ok {
			note(line, "%s is not carried into the peer book: %s", name, why)
			return
		}
		bad(line, "unknown [Interface] key %s; the import understands PrivateKey, Address, ListenPort and MTU", name)
	}
}

func parsePeerKey(p *wqPeer, line int, name, key, val string, bad, note reportFunc) {
	switch key {
	case "publickey":
		k, err := ParseKey(val)
		if err != nil {
			bad(line, "PublicKey %q: %v", val, err)
			return
		}
		p.key, p.hasKey = k, true
	case "allowedips":
		for _, s := range splitList(val) {
			q, err := parseWGPrefix(s)
			if err != nil {
				bad(line, "AllowedIPs %q is not an IP prefix", s)
				continue
			}
			p.allowed = append(p.allowed, q.Masked())
			p.allowLines = append(p.allowLines, line)
		}
	case "endpoint":
		ep, err := ParseEndpoint(val)
		if err != nil {
			bad(line, "%v", err)
			return
		}
		p.endpoint, p.epLine = ep, line
	case "persistentkeepalive":
		if strings.EqualFold(val, "off") {
			return
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 65535 {
			bad(line, "PersistentKeepalive %q must be a number of seconds or off", val)
			return
		}
		p.keepalive = n
	case "presharedkey":
		// Dropping it silently would quietly weaken the link it protected.
		bad(line, "PresharedKey cannot be expressed in a peer book (a book is public and wgmesh uses no preshared keys); remove it to import this file")
	default:
		bad(line, "unknown [Peer] key %s; the import understands PublicKey, AllowedIPs, Endpoint and PersistentKeepalive", name)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseWGPrefix accepts "10.0.0.1/24" (host bits kept: it is an interface
// address) and a bare "10.0.0.1" (a single host).
func parseWGPrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("bad address")
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("bad prefix")
	}
	return p, nil
}
