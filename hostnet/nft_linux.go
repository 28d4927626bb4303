package hostnet

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// filter is the content of wgmesh's own nftables table, inet family, named
// tableName(ifname). Owning a whole table keeps removal from touching
// anyone else's rules, and lets the table be replaced in one transaction.
//
//	chain input    (filter, hook input):   drop traffic to this node's mesh
//	               addresses arriving on any interface but ifname and lo
//	chain forward  (filter, hook forward): from ifname, accept only towards
//	               subnets; drop the rest                     (with subnets)
//	chain postrouting (nat): masquerade mesh traffic into subnets
//	                                            (with subnets and --masquerade)
//	               and mesh traffic leaving by any other interface (exit)
//
// With subnets or as an exit member, the forward chain first clamps the
// MSS of TCP SYNs crossing the interface, either way, to the route's MTU
// (nft: tcp option maxseg size set rt mtu): the mesh MTU is smaller than
// a LAN's, and a path MTU black hole would stall TCP between the mesh and
// the LAN or the internet where ICMP "too big" does not come back.
//
// Linux accepts a packet for any local address on any interface, so
// without the input chain a host on the underlay that routes the mesh
// network via this host reaches the services wgmesh binds to mesh
// addresses (mesh DNS, registry, --expose) without WireGuard. Relayed
// traffic needs no forward rule: a relay member forwards in userspace and
// never hands those packets to the kernel.
type filter struct {
	ifname     string
	addresses  []netip.Addr
	subnets    []netip.Prefix
	masquerade []netip.Prefix
	// exit: forward from the interface to anywhere else and masquerade
	// exitNetworks there.
	exit         bool
	exitNetworks []netip.Prefix
	// dropForward keeps the forward chain's drop after the last subnet or
	// exit = true went on a reload: the forwarding sysctls stay on until
	// Undo, and without the chain the kernel would forward anything from
	// the interface.
	dropForward bool
}

// forwards reports whether the filter has (or had) a forwarding role.
func (f *filter) forwards() bool { return len(f.subnets) > 0 || f.exit || f.dropForward }

func tableName(ifname string) string { return "wgmesh_" + ifname }

// legacyFamilies are the families in which earlier versions of wgmesh
// created a table of the same name (masquerading only).
var legacyFamilies = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

// install replaces any table of ours for the interface, whatever a
// previous run left, with f, in one transaction: no moment without the
// filter and never two copies of a rule. It returns the tables of that
// name it found already there, for the log.
func (f *filter) install() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("hostnet: nftables: %w", err)
	}
	stale, err := staleTables(c, f.ifname)
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName(f.ifname)}
	for _, old := range stale {
		if old.Family == nftables.TableFamilyINet {
			// Adding and deleting in one batch empties it: the add
			// makes sure the delete finds it, so the batch cannot fail.
			continue
		}
		c.DelTable(old)
	}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	f.addChains(c, t)
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("hostnet: install the packet filter (nftables table inet %s): %w; TUN mode needs the kernel's nf_tables (modprobe nf_tables), or use --mode netstack", t.Name, err)
	}
	var names []string
	for _, old := range stale {
		names = append(names, familyName(old.Family)+" "+old.Name)
	}
	return names, nil
}

func staleTables(c *nftables.Conn, ifname string) ([]*nftables.Table, error) {
	ts, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("hostnet: list nftables tables: %w", err)
	}
	var out []*nftables.Table
	for _, t := range ts {
		if t.Name != tableName(ifname) {
			continue
		}
		if t.Family == nftables.TableFamilyINet || t.Family == legacyFamilies[0] || t.Family == legacyFamilies[1] {
			out = append(out, t)
		}
	}
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family %d", f)
}

// removeTable deletes the interface's table, if it is there.
func removeTable(ifname string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	stale, err := staleTables(c, ifname)
	if err != nil || len(stale) == 0 {
		return err
	}
	for _, t := range stale {
		c.DelTable(t)
	}
	return c.Flush()
}

func (f *filter) addChains(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, a := range f.addresses {
		// iifname != IF iifname != "lo" ip daddr A drop
		r := append(ifnameIs(expr.MetaKeyIIFNAME, f.ifname, false), ifnameIs(expr.MetaKeyIIFNAME, "lo", false)...)
		r = append(r, addrIn(netip.PrefixFrom(a, a.BitLen()), false)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(r, &expr.Verdict{Kind: expr.VerdictDrop})})
	}
	if !f.forwards() {
		return
	}
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(ifnameIs(key, f.ifname, true), clampMSS()...)})
	}
	if f.exit {
		// iifname IF oifname != IF accept
		r := append(ifnameIs(expr.MetaKeyIIFNAME, f.ifname, true), ifnameIs(expr.MetaKeyOIFNAME, f.ifname, false)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(r, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	for _, s := range f.subnets {
		// iifname IF ip daddr SUBNET accept
		r := append(ifnameIs(expr.MetaKeyIIFNAME, f.ifname, true), addrIn(s, false)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(r, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	// iifname IF drop
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(ifnameIs(expr.MetaKeyIIFNAME, f.ifname, true), &expr.Verdict{Kind: expr.VerdictDrop})})
	if len(f.masquerade) == 0 && !f.exit {
		return
	}
	nat := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	if f.exit {
		for _, n := range f.exitNetworks {
			// ip saddr NET oifname != IF masquerade
			r := append(addrIn(n, true), ifnameIs(expr.MetaKeyOIFNAME, f.ifname, false)...)
			c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: append(r, &expr.Masq{})})
		}
	}
	for _, n := range f.masquerade {
		for _, s := range f.subnets {
			if n.Addr().Is6() != s.Addr().Is6() {
				continue
			}
			// ip saddr NET ip daddr SUBNET oifname != IF masquerade
			r := append(addrIn(n, true), addrIn(s, false)...)
			r = append(r, ifnameIs(expr.MetaKeyOIFNAME, f.ifname, false)...)
			c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: append(r, &expr.Masq{})})
		}
	}
}

// ifnameIs compares the input or output interface's name with name.
func ifnameIs(key expr.MetaKey, name string, equal bool) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	op := expr.CmpOpNeq
	if equal {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// addrIn matches packets of p's family whose source (or destination)
// address is in p. In an inet table the protocol must be checked before
// the header is read.
func addrIn(p netip.Prefix, source bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	offset, size := uint32(16), uint32(4) // IPv4 destination address
	if source {
		offset = 12
	}
	if p.Addr().Is6() {
		proto = unix.NFPROTO_IPV6
		offset, size = 24, 16
		if source {
			offset = 8
		}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: net.CIDRMask(p.Bits(), int(size)*8), Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// clampMSS is "tcp flags & (syn|rst) == syn tcp option maxseg size set rt
// mtu": the MSS option of a SYN lowered to what the route's MTU allows
// (the kernel only ever lowers it).
func clampMSS() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{DestRegister: 1, SourceRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}
