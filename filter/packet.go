package filter

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the filter knows.
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoICMPv6   = 58
	protoDstOpts  = 60
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// maxExtHeaders bounds the walk over IPv6 extension headers: a packet with
// more is judged malformed rather than walked without end.
const maxExtHeaders = 8

// flow is what the filter reads from one packet. Ports are the TCP or UDP
// ports; for ICMP echo requests and replies both carry the identifier.
type flow struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	icmpType     uint8
	tcpFlags     uint8
	// fragment is set for a non-first fragment, which carries no
	// transport header; the ports are then zero.
	fragment bool
	// ports reports that sport and dport were read (TCP, UDP, ICMP echo).
	ports bool
	// inner is the start of the packet an ICMP error quotes, -1 if none.
	inner int
}

// parse reads pkt into f. It reports false for anything that is not a
// well-formed IPv4 or IPv6 packet with a complete transport header (where
// the protocol is one the filter reads). It never allocates.
func parse(pkt []byte, f *flow) bool {
	return parseIP(pkt, f, true)
}

// parseIP parses one IP packet. outer is false for the packet quoted by an
// ICMP error, which may be cut short after 8 bytes of transport header and
// whose own ICMP errors are not followed.
func parseIP(pkt []byte, f *flow, outer bool) bool {
	*f = flow{inner: -1}
	if len(pkt) < 1 {
		return false
	}
	var payload []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total < ihl || (outer && total > len(pkt)) || ihl > len(pkt) {
			return false
		}
		if total < len(pkt) {
			pkt = pkt[:total]
		}
		f.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		f.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		f.proto = pkt[9]
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
			f.fragment = true
			return true
		}
		payload = pkt[ihl:]
	case 6:
		if len(pkt) < 40 {
			return false
		}
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if outer && total > len(pkt) {
			return false
		}
		if total < len(pkt) {
			pkt = pkt[:total]
		}
		f.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		f.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		next, off := pkt[6], 40
		for n := 0; ; n++ {
			var size int
			switch next {
			case protoHopByHop, protoRouting, protoDstOpts:
				if off+8 > len(pkt) {
					return false
				}
				size = (int(pkt[off+1]) + 1) * 8
			case protoAH:
				if off+8 > len(pkt) {
					return false
				}
				size = (int(pkt[off+1]) + 2) * 4
			case protoFragment:
				if off+8 > len(pkt) {
					return false
				}
				if binary.BigEndian.Uint16(pkt[off+2:off+4])>>3 != 0 {
					f.proto = pkt[off]
					f.fragment = true
					return true
				}
				size = 8
			default:
				size = -1
			}
			if size < 0 {
				break
			}
			if n == maxExtHeaders {
				return false
			}
			if off+size > len(pkt) {
				return false
			}
			next = pkt[off]
			off += size
		}
		f.proto = next
		payload = pkt[off:]
	default:
		return false
	}
	switch f.proto {
	case protoTCP:
		// The inner packet of an ICMP error holds at least 8 bytes of it.
		if len(payload) < 20 && (outer || len(payload) < 8) {
			return false
		}
		f.sport = binary.BigEndian.Uint16(payload[0:2])
		f.dport = binary.BigEndian.Uint16(payload[2:4])
		if len(payload) >= 14 {
			f.tcpFlags = payload[13]
		}
		f.ports = true
	case protoUDP:
		if len(payload) < 8 {
			return false
		}
		f.sport = binary.BigEndian.Uint16(payload[0:2])
		f.dport = binary.BigEndian.Uint16(payload[2:4])
		f.ports = true
	case protoICMP, protoICMPv6:
		if len(payload) < 8 {
			return false
		}
		f.icmpType = payload[0]
		switch {
		case isEcho(f.proto, f.icmpType):
			id := binary.BigEndian.Uint16(payload[4:6])
			f.sport, f.dport = id, id
			f.ports = true
		case outer && isICMPError(f.proto, f.icmpType) && len(payload) > 8:
			f.inner = len(pkt) - len(payload) + 8
		}
	}
	return true
}

// isEcho reports an echo request or reply.
func isEcho(proto, typ uint8) bool {
	if proto == protoICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}

// isEchoRequest reports an echo request.
func isEchoRequest(proto, typ uint8) bool {
	return (proto == protoICMP && typ == 8) || (proto == protoICMPv6 && typ == 128)
}

// isICMPError reports the ICMP messages that quote the packet they are
// about: destination unreachable, source quench, redirect, time exceeded
// and parameter problem (IPv4); destination unreachable, packet too big,
// time exceeded and parameter problem (ICMPv6).
func isICMPError(proto, typ uint8) bool {
	if proto == protoICMP {
		return typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
	}
	return typ >= 1 && typ <= 4
}
