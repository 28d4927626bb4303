package peerbook

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule is one [[rule]] of the book: members in From may open new flows to
// members in To, for the protocols and ports in Ports. A book without rules
// allows everything; with at least one, a member accepts a new inbound flow
// only when some rule allows it (package filter enforces them).
type Rule struct {
	From  []Selector
	To    []Selector
	Ports []PortRange
	// Line is the line of the rule's [[rule]] header in the source file.
	Line int
}

// SelectorKind says what a Selector names.
type SelectorKind uint8

const (
	// SelectAll is "*": every member.
	SelectAll SelectorKind = iota
	// SelectMember names one member.
	SelectMember
	// SelectGroup is "group:NAME": every member with NAME in its groups.
	SelectGroup
	// SelectSubnet is "subnet:CIDR", only in To: destinations inside CIDR,
	// which lies within one member's subnets. That member (the subnet
	// router) enforces it for the traffic it routes into the subnet.
	SelectSubnet
	// SelectExit is "exit:NAME", only in To: destinations outside the
	// mesh, reached through member NAME, which has exit = true. That
	// member (the exit) enforces it for the traffic it forwards. Naming
	// the member itself, a group it is in or "*" does not open it as an
	// exit.
	SelectExit
)

// Selector is one element of a rule's from or to list.
type Selector struct {
	Kind SelectorKind
	// Name is the member or group name as the book spells it.
	Name string
	// Subnet is set for SelectSubnet.
	Subnet netip.Prefix
}

// String returns the selector as the book writes it.
func (s Selector) String() string {
	switch s.Kind {
	case SelectAll:
		return "*"
	case SelectGroup:
		return "group:" + s.Name
	case SelectSubnet:
		return "subnet:" + s.Subnet.String()
	case SelectExit:
		return "exit:" + s.Name
	}
	return s.Name
}

// Proto is the protocol of a PortRange.
type Proto uint8

const (
	// ProtoAny is "any": every protocol and port.
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
	// ProtoICMP is "icmp": ICMP over IPv4 and ICMPv6 over IPv6, every type.
	ProtoICMP
)

// PortRange is one element of a rule's ports: "any", "icmp", "tcp:N",
// "tcp:A-B", "udp:N" or "udp:A-B". Lo and Hi are set for TCP and UDP only.
type PortRange struct {
	Proto  Proto
	Lo, Hi uint16
}

// String returns the port range as the book writes it.
func (p PortRange) String() string {
	switch p.Proto {
	case ProtoAny:
		return "any"
	case ProtoICMP:
		return "icmp"
	}
	name := "tcp:"
	if p.Proto == ProtoUDP {
		name = "udp:"
	}
	if p.Lo == p.Hi {
		return name + strconv.Itoa(int(p.Lo))
	}
	return name + strconv.Itoa(int(p.Lo)) + "-" + strconv.Itoa(int(p.Hi))
}

// Equal reports whether r and q allow the same flows in the same words.
// Line is ignored.
func (r *Rule) Equal(q *Rule) bool {
	return slices.Equal(r.From, q.From) && slices.Equal(r.To, q.To) && slices.Equal(r.Ports, q.Ports)
}

// RulesEqual reports whether two books hold the same rules in the same order.
func RulesEqual(a, b []Rule) bool {
	return slices.EqualFunc(a, b, func(x, y Rule) bool { return x.Equal(&y) })
}

// Members returns the indexes into b.Peers of the members a selector names.
// A subnet selector names the member that routes its subnet, an exit
// selector the exit member it names (none when it lost exit = true).
func (b *Book) Members(s Selector) []int {
	var out []int
	for i := range b.Peers {
		p := &b.Peers[i]
		switch s.Kind {
		case SelectAll:
			out = append(out, i)
		case SelectMember:
			if strings.EqualFold(p.Name, s.Name) {
				out = append(out, i)
			}
		case SelectGroup:
			if slices.ContainsFunc(p.Groups, func(g string) bool { return strings.EqualFold(g, s.Name) }) {
				out = append(out, i)
			}
		case SelectSubnet:
			if slices.ContainsFunc(p.Subnets, func(n netip.Prefix) bool { return subnetWithin(s.Subnet, n) }) {
				out = append(out, i)
			}
		case SelectExit:
			if p.Exit && strings.EqualFold(p.Name, s.Name) {
				out = append(out, i)
			}
		}
	}
	return out
}

// subnetWithin reports whether inner lies inside outer.
func subnetWithin(inner, outer netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

var ruleKeys = []string{"from", "to", "ports"}

// rules checks every [[rule]] against the members already checked.
func (c *checker) rules(doc map[string]any, b *Book) {
	v, ok := doc["rule"]
	if !ok {
		return
	}
	arr, ok := v.([]any)
	if !ok {
		c.add("rule", "rule must be an array of tables written as [[rule]], not %s", typeName(v))
		return
	}
	for i, e := range arr {
		path := "rule[" + strconv.Itoa(i) + "]"
		label := "rule #" + strconv.Itoa(i+1)
		t, ok := e.(map[string]any)
		if !ok {
			c.add(path, "%s must be a table, not %s", label, typeName(e))
			continue
		}
		c.unknownKeys(path, label+": ", t, ruleKeys)
		r := Rule{Line: c.lines.line(path)}
		var okFrom, okTo, okPorts bool
		r.From, okFrom = c.selectors(path, label, "from", t, b)
		r.To, okTo = c.selectors(path, label, "to", t, b)
		r.Ports, okPorts = c.ports(path, label, t)
		if okFrom && okTo && okPorts {
			c.neverMatches(path, label, &r, b)
		}
		b.Rules = append(b.Rules, r)
	}
}

// selectors checks a rule's from or to list. The second result is false
// when anything in it was refused.
func (c *checker) selectors(path, label, key string, t map[string]any, b *Book) ([]Selector, bool) {
	example := `"group:staff"`
	if key == "to" {
		example = `"group:servers"`
	}
	v, ok := t[key]
	if !ok {
		c.add(path, "%s: %s is missing; list member names, group:NAME or \"*\", e.g. %s = [%s]", label, key, key, example)
		return nil, false
	}
	vals, paths, ok := c.strList(path+"."+key, label+": "+key, v, example)
	if !ok {
		return nil, false
	}
	if len(v.([]any)) == 0 {
		c.add(path+"."+key, "%s: %s is empty; a rule with no %s allows nothing, list at least one member, group:NAME or \"*\"", label, key, key)
		return nil, false
	}
	good := len(vals) == len(v.([]any))
	var out []Selector
	seen := map[string]bool{}
	for i, s := range vals {
		sel, err := c.selector(key, s, b)
		if err != "" {
			c.add(paths[i], "%s: %s %s", label, key, err)
			good = false
			continue
		}
		canon := strings.ToLower(sel.String())
		if seen[canon] {
			c.add(paths[i], "%s: %s lists %q twice; list it once", label, key, s)
			good = false
			continue
		}
		seen[canon] = true
		out = append(out, sel)
	}
	if good && len(out) > 1 && slices.ContainsFunc(out, func(s Selector) bool { return s.Kind == SelectAll }) {
		c.add(path+"."+key, "%s: %s has \"*\" and more; \"*\" already names every member, write %s = [\"*\"]", label, key, key)
		good = false
	}
	return out, good
}

// selector parses one from/to element; the message, if any, follows
// "rule #N: from ".
func (c *checker) selector(key, s string, b *Book) (Selector, string) {
	if r, bad := controlChar(s); bad {
		return Selector{}, fmt.Sprintf("%q contains control character %U", s, r)
	}
	switch {
	case s == "*":
		return Selector{Kind: SelectAll}, ""
	case strings.HasPrefix(s, "group:"):
		g := s[len("group:"):]
		if !validLabel(g) {
			return Selector{}, fmt.Sprintf("%q: group %q is not a DNS label; use 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen", s, g)
		}
		sel := Selector{Kind: SelectGroup, Name: g}
		if len(b.Members(sel)) == 0 {
			return Selector{}, fmt.Sprintf("%q names a group no member is in; add groups = [%q] to its members, or fix the name", s, g)
		}
		return sel, ""
	case strings.HasPrefix(s, "subnet:"):
		if key != "to" {
			return Selector{}, fmt.Sprintf("%q: subnet:CIDR may only appear in to; from names members (a LAN behind a subnet router counts as that router)", s)
		}
		p, err := parseCanonicalPrefix(s[len("subnet:"):])
		if err != nil {
			return Selector{}, fmt.Sprintf("%q: %v", s, err)
		}
		sel := Selector{Kind: SelectSubnet, Subnet: p}
		if len(b.Members(sel)) == 0 {
			return Selector{}, fmt.Sprintf("%q is not inside any member's subnets; name a subnet a member routes, or a range inside one", s)
		}
		return sel, ""
	case strings.HasPrefix(s, "exit:"):
		if key != "to" {
			return Selector{}, fmt.Sprintf("%q: exit:NAME may only appear in to; from names members", s)
		}
		name := s[len("exit:"):]
		if !validLabel(name) {
			return Selector{}, fmt.Sprintf("%q: %q is not a member name", s, name)
		}
		sel := Selector{Kind: SelectExit, Name: name}
		p, ok := b.PeerByName(name)
		switch {
		case !ok:
			return Selector{}, fmt.Sprintf("%q: %q is not a member of the book; name a member with exit = true", s, name)
		case !p.Exit:
			return Selector{}, fmt.Sprintf("%q: member %q (line %d) has no exit = true; set it there, or name an exit member", s, p.Name, p.Line)
		}
		return sel, ""
	case strings.Contains(s, ":"):
		return Selector{}, fmt.Sprintf("%q is not a member name, group:NAME, subnet:CIDR, exit:NAME or \"*\"", s)
	}
	sel := Selector{Kind: SelectMember, Name: s}
	if !validLabel(s) {
		return Selector{}, fmt.Sprintf("%q is not a member name, group:NAME or \"*\"", s)
	}
	if len(b.Members(sel)) == 0 {
		return Selector{}, fmt.Sprintf("%q is not a member of the book; use a member's name, group:NAME or \"*\"", s)
	}
	return sel, ""
}

// ports checks a rule's ports list.
func (c *checker) ports(path, label string, t map[string]any) ([]PortRange, bool) {
	const forms = `"tcp:22", "tcp:8000-8100", "udp:53", "icmp" or "any"`
	v, ok := t["ports"]
	if !ok {
		c.add(path, "%s: ports is missing; list what the rule opens, e.g. ports = [\"tcp:22\", \"icmp\"], or [\"any\"]", label)
		return nil, false
	}
	vals, paths, ok := c.strList(path+".ports", label+": ports", v, `"tcp:22"`)
	if !ok {
		return nil, false
	}
	if len(v.([]any)) == 0 {
		c.add(path+".ports", "%s: ports is empty; a rule with no ports allows nothing, list %s", label, forms)
		return nil, false
	}
	good := len(vals) == len(v.([]any))
	var out []PortRange
	for i, s := range vals {
		p, err := parsePortRange(s)
		if err != "" {
			if strings.Contains(err, "write") {
				c.add(paths[i], "%s: ports %s", label, err)
			} else {
				c.add(paths[i], "%s: ports %s; write %s", label, err, forms)
			}
			good = false
			continue
		}
		if j := slices.IndexFunc(out, func(q PortRange) bool { return overlapsPorts(p, q) }); j >= 0 {
			if out[j] == p {
				c.add(paths[i], "%s: ports lists %q twice; list it once", label, s)
			} else {
				c.add(paths[i], "%s: ports %q overlaps %q; list each port once", label, s, out[j].String())
			}
			good = false
			continue
		}
		out = append(out, p)
	}
	if good && len(out) > 1 && slices.ContainsFunc(out, func(p PortRange) bool { return p.Proto == ProtoAny }) {
		c.add(path+".ports", "%s: ports has \"any\" and more; \"any\" already opens every protocol and port, write ports = [\"any\"]", label)
		good = false
	}
	return out, good
}

func overlapsPorts(a, b PortRange) bool {
	if a.Proto != b.Proto {
		return false
	}
	if a.Proto == ProtoAny || a.Proto == ProtoICMP {
		return true
	}
	return a.Lo <= b.Hi && b.Lo <= a.Hi
}

// parsePortRange parses one ports element; the message, if any, follows
// "rule #N: ports ".
func parsePortRange(s string) (PortRange, string) {
	if r, bad := controlChar(s); bad {
		return PortRange{}, fmt.Sprintf("%q contains control character %U", s, r)
	}
	switch s {
	case "any":
		return PortRange{Proto: ProtoAny}, ""
	case "icmp":
		return PortRange{Proto: ProtoICMP}, ""
	case "tcp", "udp":
		return PortRange{}, fmt.Sprintf("%q has no port; for every port write \"%s:1-65535\"", s, s)
	}
	proto, rest, ok := strings.Cut(s, ":")
	var p PortRange
	switch {
	case !ok:
		return PortRange{}, fmt.Sprintf("%q is not a port", s)
	case proto == "tcp":
		p.Proto = ProtoTCP
	case proto == "udp":
		p.Proto = ProtoUDP
	case proto == "icmp":
		return PortRange{}, fmt.Sprintf("%q: icmp has no ports; write \"icmp\" (it opens every ICMP and ICMPv6 type)", s)
	default:
		return PortRange{}, fmt.Sprintf("%q: unknown protocol %q (tcp, udp or icmp)", s, proto)
	}
	lo, hi, isRange := strings.Cut(rest, "-")
	if !isRange {
		hi = lo
	}
	a, errA := parseRulePort(lo)
	b, errB := parseRulePort(hi)
	switch {
	case errA != "":
		return PortRange{}, fmt.Sprintf("%q: %s", s, errA)
	case errB != "":
		return PortRange{}, fmt.Sprintf("%q: %s", s, errB)
	case a > b:
		return PortRange{}, fmt.Sprintf("%q: the range starts after it ends; write \"%s:%d-%d\"", s, proto, b, a)
	}
	p.Lo, p.Hi = a, b
	return p, ""
}

func parseRulePort(s string) (uint16, string) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Sprintf("%q is not a port number", s)
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Sprintf("port %d is outside 1-65535", n)
	}
	return uint16(n), ""
}

// neverMatches refuses a rule whose only sender is its only receiver: a
// member's traffic to itself never crosses the mesh, so the rule would
// allow nothing.
func (c *checker) neverMatches(path, label string, r *Rule, b *Book) {
	from := map[int]bool{}
	for _, s := range r.From {
		for _, i := range b.Members(s) {
			from[i] = true
		}
	}
	to := map[int]bool{}
	for _, s := range r.To {
		for _, i := range b.Members(s) {
			to[i] = true
		}
	}
	if len(from) != 1 || len(to) != 1 {
		return
	}
	for i := range from {
		if to[i] {
			c.add(path, "%s can never match: it allows only %q to reach itself, and a member's traffic to itself never crosses the mesh; name other members in from or to", label, b.Peers[i].Name)
		}
	}
}

// marshalRules appends the canonical [[rule]] tables of rs.
func marshalRules(w *bytes.Buffer, rs []Rule) {
	for i := range rs {
		r := &rs[i]
		w.WriteString("\n[[rule]]\n")
		w.WriteString("from = " + selectorList(r.From) + "\n")
		w.WriteString("to = " + selectorList(r.To) + "\n")
		ps := make([]string, len(r.Ports))
		for j, p := range r.Ports {
			ps[j] = p.String()
		}
		w.WriteString("ports = " + stringList(ps) + "\n")
	}
}

func selectorList(ss []Selector) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return stringList(out)
}
