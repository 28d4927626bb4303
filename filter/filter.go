// Package filter is wgmesh's access-rule packet filter: it enforces the
// book's [[rule]] tables on the packets a member receives from the mesh.
//
// Compile turns a book into Rules for one member; a Filter holds the rules
// in force (swapped atomically on reload) and a connection-tracking table,
// so that replies to flows the member started pass while new flows from
// the mesh need a rule. A book without rules allows everything, and then
// the filter costs one atomic load per packet (and a flag test of outbound
// ones, to note the TCP connections the member opens).
//
// # Usage
//
// The datapath calls Inbound on every packet that arrives from the mesh,
// before it reaches the member's network stack (TUN or netstack), and
// drops it when the verdict says so; it calls Outbound on every packet the
// member sends into the mesh. Neither allocates or blocks on more than one
// short lock.
//
//	rules, err := filter.Compile(book, self)
//	f := filter.New(rules, filter.Options{})
//	if v, peer := f.Inbound(pkt); v.Drop() { count(peer, v); continue }
//	f.Outbound(pkt)
//	f.Swap(newRules) // on reload
package filter

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Verdict is the filter's decision on one packet, with its reason.
type Verdict uint8

const (
	// AcceptOpen: the book has no rules.
	AcceptOpen Verdict = iota
	// AcceptRule: a rule allows the flow.
	AcceptRule
	// AcceptTracked: the packet belongs to a flow this member (or a host
	// in its subnets) started, or is an ICMP error about one.
	AcceptTracked
	// AcceptMeshService: TCP or UDP to the mesh DNS / registry port of one
	// of the member's own mesh addresses, never blocked.
	AcceptMeshService

	// DropNoRule: the sender is a member, but no rule allows the flow and
	// the member did not start it.
	DropNoRule
	// DropNotMember: the source address belongs to no member of the book.
	DropNotMember
	// DropFragment: a non-first fragment (it has no ports) from a sender
	// that may not reach every port of its protocol.
	DropFragment
	// DropMalformed: not a well-formed IPv4 or IPv6 packet.
	DropMalformed
)

// Drop reports whether the packet must be dropped.
func (v Verdict) Drop() bool { return v >= DropNoRule }

// String names the verdict; drop reasons are the metric labels
// ("no-rule", "not-a-member", "fragment", "malformed").
func (v Verdict) String() string {
	switch v {
	case AcceptOpen:
		return "open"
	case AcceptRule:
		return "rule"
	case AcceptTracked:
		return "tracked"
	case AcceptMeshService:
		return "mesh-service"
	case DropNoRule:
		return "no-rule"
	case DropNotMember:
		return "not-a-member"
	case DropFragment:
		return "fragment"
	case DropMalformed:
		return "malformed"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Options tune a Filter. The zero value is ready to use.
type Options struct {
	// MaxFlows bounds the connection-tracking table (default
	// DefaultMaxFlows; split over 16 shards, so at least 16). When a
	// shard is full, a new flow evicts an expired entry, or else an
	// arbitrary one.
	MaxFlows int
	// Timeouts of tracked flows; zero fields take DefaultTimeouts.
	Timeouts Timeouts
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time
}

// Filter enforces one member's rules. Its methods are safe for concurrent
// use; Inbound and Outbound take no lock when the book has no rules, and
// otherwise at most one of the conntrack table's sharded locks.
type Filter struct {
	rules atomic.Pointer[Rules]
	ct    *conntrack
}

// New returns a filter enforcing r; nil r allows everything.
func New(r *Rules, opts Options) *Filter {
	if r == nil {
		r = &Rules{open: true}
	}
	f := &Filter{ct: newConntrack(opts.MaxFlows, opts.Timeouts, opts.Now)}
	f.rules.Store(r)
	return f
}

// Rules returns the rules in force.
func (f *Filter) Rules() *Rules { return f.rules.Load() }

// Swap puts r in force at once (nil allows everything). Flows from the
// mesh are judged packet by packet, so a flow the new rules no longer allow
// is cut at its next packet. Tracked flows (those this member started)
// stay while their remote side is still the same member; those towards an
// address that left the book or moved to another member are forgotten, as
// are all of them when r allows everything (only new TCP connections are
// noted then).
func (f *Filter) Swap(r *Rules) {
	if r == nil {
		r = &Rules{open: true}
	}
	old := f.rules.Swap(r)
	if r.open {
		f.ct.keep(func(*ctKey) bool { return false })
		return
	}
	f.ct.keep(func(k *ctKey) bool {
		remote := netip.AddrFrom16(k.remote).Unmap()
		m := r.sender(remote)
		if m < 0 {
			return false
		}
		if old.open {
			return true
		}
		o := old.sender(remote)
		return o >= 0 && old.members[o].key == r.members[m].key
	})
}

// Flows is the number of entries in the connection-tracking table.
func (f *Filter) Flows() int { return f.ct.len() }

// Inbound judges a packet that arrived from the mesh. It returns the
// verdict and the name of the member the source address belongs to ("" if
// none, and when the book has no rules, which skips the lookup).
func (f *Filter) Inbound(pkt []byte) (Verdict, string) {
	r := f.rules.Load()
	if r.open {
		return AcceptOpen, ""
	}
	var fl flow
	if !parse(pkt, &fl) {
		return DropMalformed, ""
	}
	m := r.sender(fl.src)
	if m < 0 {
		return DropNotMember, ""
	}
	name := r.members[m].name
	if fl.fragment {
		if r.allowed(m, fl.dst, fl.proto, 0, true) {
			return AcceptRule, name
		}
		return DropFragment, name
	}
	if (fl.proto == protoTCP || fl.proto == protoUDP) && r.meshPort(fl.dport) && r.isOwnAddr(fl.dst) {
		return AcceptMeshService, name
	}
	if r.allowed(m, fl.dst, fl.proto, fl.dport, false) {
		return AcceptRule, name
	}
	switch fl.proto {
	case protoTCP, protoUDP:
		// A bare SYN opens a connection: it cannot be a reply.
		if fl.proto == protoTCP && fl.tcpFlags&(tcpSYN|tcpACK) == tcpSYN {
			break
		}
		if f.ct.seen(keyOf(fl.dst, fl.src, fl.dport, fl.sport, fl.proto), fl.tcpFlags, true) {
			return AcceptTracked, name
		}
	case protoICMP, protoICMPv6:
		switch {
		case fl.ports && !isEchoRequest(fl.proto, fl.icmpType):
			// An echo reply to a ping this side sent.
			if f.ct.seen(keyOf(fl.dst, fl.src, fl.sport, 0, fl.proto), 0, true) {
				return AcceptTracked, name
			}
		case fl.inner >= 0:
			if f.icmpErrorAllowed(r, pkt[fl.inner:]) {
				return AcceptTracked, name
			}
		}
	}
	return DropNoRule, name
}

// icmpErrorAllowed reports whether the packet an ICMP error quotes (one
// this side sent) belongs to a flow this side started, or to a flow a rule
// lets the other side open: the error is then part of that flow (a
// "packet too big" for path MTU discovery, a port unreachable).
func (f *Filter) icmpErrorAllowed(r *Rules, quoted []byte) bool {
	var in flow
	if !parseIP(quoted, &in, false) || in.fragment || !in.ports {
		return false
	}
	switch in.proto {
	case protoTCP, protoUDP:
		if f.ct.has(keyOf(in.src, in.dst, in.sport, in.dport, in.proto)) {
			return true
		}
		m := r.sender(in.dst)
		return m >= 0 && r.allowed(m, in.src, in.proto, in.sport, false)
	case protoICMP, protoICMPv6:
		return isEchoRequest(in.proto, in.icmpType) && f.ct.has(keyOf(in.src, in.dst, in.sport, 0, in.proto))
	}
	return false
}

// Outbound notes a packet this member sends into the mesh (its own, or
// one it routes from its subnets), so that the replies pass: a TCP SYN, a
// UDP datagram or an ICMP echo request starts tracking a flow, later
// packets refresh it. A UDP datagram that a rule already lets the other
// side send back to (a reply from a service the rules open) is not
// tracked, so that the flow ends with the rule. It never drops anything.
//
// With no rules it only notes the TCP connections this member opens (one
// flag test per packet, a lock per SYN), so that a reload adding the first
// rule does not cut them: their replies need no rule.
func (f *Filter) Outbound(pkt []byte) {
	r := f.rules.Load()
	if r.open {
		if bareSYN(pkt) {
			var fl flow
			if parse(pkt, &fl) && !fl.fragment && fl.proto == protoTCP {
				// The answer passes unseen, so take the connection as
				// established: it expires on the established timeout.
				f.ct.track(keyOf(fl.src, fl.dst, fl.sport, fl.dport, fl.proto), stOpen)
			}
		}
		return
	}
	var fl flow
	if !parse(pkt, &fl) || fl.fragment || !fl.ports {
		return
	}
	switch fl.proto {
	case protoTCP:
		k := keyOf(fl.src, fl.dst, fl.sport, fl.dport, fl.proto)
		if fl.tcpFlags&(tcpSYN|tcpACK) == tcpSYN {
			f.ct.track(k, stOpening)
			return
		}
		f.ct.seen(k, fl.tcpFlags, false)
	case protoUDP:
		if m := r.sender(fl.dst); m >= 0 && r.allowed(m, fl.src, fl.proto, fl.sport, false) {
			return
		}
		f.ct.track(keyOf(fl.src, fl.dst, fl.sport, fl.dport, fl.proto), stOpen)
	case protoICMP, protoICMPv6:
		if isEchoRequest(fl.proto, fl.icmpType) {
			f.ct.track(keyOf(fl.src, fl.dst, fl.sport, 0, fl.proto), stOpen)
		}
	}
}

// bareSYN is a quick look for a TCP segment with SYN and without ACK
// directly after the IP header (no IPv6 extension headers); parse checks
// the rest.
func bareSYN(pkt []byte) bool {
	if len(pkt) < 40 {
		return false
	}
	off := 40
	switch pkt[0] >> 4 {
	case 4:
		if pkt[9] != protoTCP {
			return false
		}
		off = int(pkt[0]&0x0f) * 4
	case 6:
		if pkt[6] != protoTCP {
			return false
		}
	default:
		return false
	}
	return off+13 < len(pkt) && pkt[off+13]&(tcpSYN|tcpACK) == tcpSYN
}
