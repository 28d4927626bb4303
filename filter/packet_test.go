package filter

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for the tests. Checksums are left zero: the filter does
// not read them (the stack behind it does).

type pk struct {
	src, dst     string
	proto        uint8
	sport, dport uint16
	flags        uint8  // TCP
	icmpType     uint8  // ICMP
	id           uint16 // ICMP echo
	quote        []byte // ICMP error: the quoted packet
	fragOff      uint16 // in 8-byte units; non-zero: a non-first fragment
	moreFrags    bool
}

func (p pk) bytes() []byte {
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	var l4 []byte
	switch p.proto {
	case protoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		l4[12] = 5 << 4
		l4[13] = p.flags
	case protoUDP:
		l4 = make([]byte, 8+4)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	case protoICMP, protoICMPv6:
		l4 = make([]byte, 8)
		l4[0] = p.icmpType
		binary.BigEndian.PutUint16(l4[4:], p.id)
		l4 = append(l4, p.quote...)
	default:
		l4 = make([]byte, 8)
	}
	if src.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		frag := p.fragOff
		if p.moreFrags {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8] = 64
		h[9] = p.proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	next := p.proto
	if p.fragOff != 0 || p.moreFrags {
		fh := make([]byte, 8)
		fh[0] = p.proto
		off := p.fragOff << 3
		if p.moreFrags {
			off |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], off)
		l4 = append(fh, l4...)
		next = protoFragment
	}
	h[6] = next
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	return append(h, l4...)
}

func tcp(src string, sport uint16, dst string, dport uint16, flags uint8) []byte {
	return pk{src: src, dst: dst, proto: protoTCP, sport: sport, dport: dport, flags: flags}.bytes()
}

func udp(src string, sport uint16, dst string, dport uint16) []byte {
	return pk{src: src, dst: dst, proto: protoUDP, sport: sport, dport: dport}.bytes()
}

func icmpProto(addr string) uint8 {
	if netip.MustParseAddr(addr).Is4() {
		return protoICMP
	}
	return protoICMPv6
}

func ping(src, dst string, id uint16) []byte {
	typ := uint8(8)
	if icmpProto(src) == protoICMPv6 {
		typ = 128
	}
	return pk{src: src, dst: dst, proto: icmpProto(src), icmpType: typ, id: id}.bytes()
}

func pong(src, dst string, id uint16) []byte {
	typ := uint8(0)
	if icmpProto(src) == protoICMPv6 {
		typ = 129
	}
	return pk{src: src, dst: dst, proto: icmpProto(src), icmpType: typ, id: id}.bytes()
}

// unreachable is the ICMP error src sends about quoted (port unreachable,
// or for IPv6 destination unreachable), holding its first 28 or 48 bytes.
func unreachable(src, dst string, quoted []byte) []byte {
	n := 28
	typ := uint8(3)
	if icmpProto(src) == protoICMPv6 {
		n, typ = 48, 1
	}
	return pk{src: src, dst: dst, proto: icmpProto(src), icmpType: typ, quote: quoted[:min(n, len(quoted))]}.bytes()
}
