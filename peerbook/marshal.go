package peerbook

import (
	"bytes"
	"net/netip"
	"strconv"
	"unicode/utf8"
)

// Marshal returns the canonical TOML text of b: format 1, every [mesh]
// setting spelled out, and for each member only the optional keys it sets.
// Parse(Marshal(b)) yields a book equal to b (apart from Line and Source)
// whenever b is valid. Comments of the original file are not kept.
func Marshal(b *Book) []byte {
	var w bytes.Buffer
	w.WriteString("format = " + strconv.Itoa(CurrentFormat) + "\n")
	w.WriteString("serial = " + strconv.FormatUint(b.Serial, 10) + "\n")

	m := &b.Mesh
	w.WriteString("\n[mesh]\n")
	if m.Domain != "" {
		w.WriteString("domain = " + quote(m.Domain) + "\n")
	}
	w.WriteString("networks = " + prefixList(m.Networks) + "\n")
	if m.ListenPort != 0 {
		w.WriteString("listen_port = " + strconv.Itoa(int(m.ListenPort)) + "\n")
	}
	if m.MTU != 0 {
		w.WriteString("mtu = " + strconv.Itoa(m.MTU) + "\n")
	}
	// Always written: 0 means "off", while a missing key means the default.
	w.WriteString("persistent_keepalive = " + strconv.Itoa(int(m.PersistentKeepalive)) + "\n")
	if m.NoLANCandidates {
		w.WriteString("lan_candidates = false\n")
	}

	for i := range b.Peers {
		p := &b.Peers[i]
		w.WriteString("\n[[peer]]\n")
		w.WriteString("name = " + quote(p.Name) + "\n")
		w.WriteString("public_key = " + quote(p.PublicKey.String()) + "\n")
		w.WriteString("addresses = " + addrList(p.Addresses) + "\n")
		if len(p.Endpoints) > 0 {
			w.WriteString("endpoints = " + endpointList(p.Endpoints) + "\n")
		} else if !p.Endpoint.IsZero() {
			w.WriteString("endpoint = " + quote(p.Endpoint.String()) + "\n")
		}
		if p.ListenPort != 0 {
			w.WriteString("listen_port = " + strconv.Itoa(int(p.ListenPort)) + "\n")
		}
		if len(p.Subnets) > 0 {
			w.WriteString("subnets = " + prefixList(p.Subnets) + "\n")
		}
		if p.Registry {
			w.WriteString("registry = true\n")
		}
		if p.Relay {
			w.WriteString("relay = true\n")
		}
		if p.Exit {
			w.WriteString("exit = true\n")
		}
		if len(p.Groups) > 0 {
			w.WriteString("groups = " + stringList(p.Groups) + "\n")
		}
	}
	marshalRules(&w, b.Rules)
	return w.Bytes()
}

func prefixList(ps []netip.Prefix) string {
	var w bytes.Buffer
	w.WriteByte('[')
	for i, p := range ps {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteString(quote(p.String()))
	}
	w.WriteByte(']')
	return w.String()
}

func stringList(ss []string) string {
	var w bytes.Buffer
	w.WriteByte('[')
	for i, s := range ss {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteString(quote(s))
	}
	w.WriteByte(']')
	return w.String()
}

func addrList(as []netip.Addr) string {
	var w bytes.Buffer
	w.WriteByte('[')
	for i, a := range as {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteString(quote(a.String()))
	}
	w.WriteByte(']')
	return w.String()
}

// quote writes a TOML basic string. Valid books hold only plain ASCII
// strings, but Marshal also serves books built in code, and whatever they
// hold must come out as one line that means the same thing.
func quote(s string) string {
	const hex = "0123456789ABCDEF"
	var w bytes.Buffer
	w.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			w.WriteByte('\\')
			w.WriteRune(r)
		case r == utf8.RuneError:
			w.WriteString(`\uFFFD`)
		case r < 0x20 || r == 0x7f:
			w.WriteString(`\u00`)
			w.WriteByte(hex[r>>4])
			w.WriteByte(hex[r&0xf])
		default:
			w.WriteRune(r)
		}
	}
	w.WriteByte('"')
	return w.String()
}

func endpointList(eps []Endpoint) string {
	var w bytes.Buffer
	w.WriteByte('[')
	for i, e := range eps {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteString(quote(e.String()))
	}
	w.WriteByte(']')
	return w.String()
}
