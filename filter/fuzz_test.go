package filter

import (
	"net/netip"
	"testing"
)

// reader is the test's own packet reader: every access is checked, and a
// read past the end marks the whole parse bad, rather than each length
// being compared up front as parse does.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u8(off int) uint8 {
	if off < 0 || off >= len(r.b) {
		r.bad = true
		return 0
	}
	return r.b[off]
}

func (r *reader) u16(off int) uint16 { return uint16(r.u8(off))<<8 | uint16(r.u8(off+1)) }

func (r *reader) addr(off, n int) netip.Addr {
	var a [16]byte
	for i := range n {
		a[i] = r.u8(off + i)
	}
	if n == 4 {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16(a)
}

type tuple struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	fragment     bool
}

// refParse is the oracle: the 5-tuple of an outer packet by RFC 791, 8200
// and 2460 (extension header lengths), 793, 768 and 792/4443 (echo ids).
func refParse(pkt []byte) (tuple, bool) {
	r := &reader{b: pkt}
	var t tuple
	if len(pkt) == 0 {
		return t, false
	}
	l4 := 0
	switch pkt[0] >> 4 {
	case 4:
		hlen := int(r.u8(0)&15) << 2
		total := int(r.u16(2))
		if len(pkt) < 20 || hlen < 20 || hlen > total || total > len(pkt) {
			return t, false
		}
		r.b = pkt[:total]
		t.src, t.dst, t.proto = r.addr(12, 4), r.addr(16, 4), r.u8(9)
		if r.u16(6)<<3 != 0 { // offset bits, with the flags shifted out
			t.fragment = true
			return t, !r.bad
		}
		l4 = hlen
	case 6:
		if len(pkt) < 40 {
			return t, false
		}
		total := 40 + int(r.u16(4))
		if total > len(pkt) {
			return t, false
		}
		r.b = pkt[:total]
		t.src, t.dst = r.addr(8, 16), r.addr(24, 16)
		next, off, seen := r.u8(6), 40, 0
	walk:
		for {
			switch next {
			case 0, 43, 60, 51, 44:
				if seen++; seen > maxExtHeaders || off+8 > len(r.b) {
					return t, false
				}
			default:
				break walk
			}
			n := 8
			switch next {
			case 0, 43, 60:
				n = 8 * (1 + int(r.u8(off+1)))
			case 51:
				n = 4 * (2 + int(r.u8(off+1)))
			case 44:
				if r.u16(off+2)&0xfff8 != 0 {
					t.proto, t.fragment = r.u8(off), true
					return t, !r.bad
				}
			}
			if off+n > len(r.b) {
				return t, false
			}
			next = r.u8(off)
			off += n
		}
		t.proto = next
		l4 = off
	default:
		return t, false
	}
	rest := len(r.b) - l4
	switch t.proto {
	case 6:
		if rest < 20 {
			return t, false
		}
		t.sport, t.dport = r.u16(l4), r.u16(l4+2)
	case 17:
		if rest < 8 {
			return t, false
		}
		t.sport, t.dport = r.u16(l4), r.u16(l4+2)
	case 1, 58:
		if rest < 8 {
			return t, false
		}
		typ := r.u8(l4)
		if (t.proto == 1 && (typ == 0 || typ == 8)) || (t.proto == 58 && (typ == 128 || typ == 129)) {
			t.sport = r.u16(l4 + 4)
			t.dport = t.sport
		}
	}
	return t, !r.bad
}

// FuzzParse: the filter's packet parser never panics, agrees with refParse
// on what is a packet and on its 5-tuple, and Inbound and Outbound never
// panic on anything.
func FuzzParse(f *testing.F) {
	for _, p := range [][]byte{
		tcp(laptop, 40000, srv, 22, tcpSYN), udp(lap6, 1, srv6, 53), ping(srv, phone, 7), pong(lap6, srv6, 9),
		unreachable(phone, srv, udp(srv, 1000, phone, 7000)), unreachable(lap6, srv6, udp(srv6, 1, lap6, 2)),
		pk{src: lap6, dst: srv6, proto: protoUDP, fragOff: 185}.bytes(), pk{src: laptop, dst: srv, proto: protoUDP, fragOff: 3}.bytes(),
		pk{src: lap6, dst: srv6, proto: protoTCP, dport: 22, moreFrags: true}.bytes(), pk{src: admin, dst: srv, proto: 47}.bytes(),
	} {
		f.Add(p)
	}
	clk := &fakeClock{}
	filt := New(compile(f, testBook(testRules), 1), Options{MaxFlows: 256, Now: clk.now})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var fl flow
		ok := parse(pkt, &fl)
		want, wantOK := refParse(pkt)
		if ok != wantOK {
			t.Fatalf("parse ok = %v, reference %v, packet %x", ok, wantOK, pkt)
		}
		if ok {
			got := tuple{fl.src, fl.dst, fl.proto, fl.sport, fl.dport, fl.fragment}
			if got != want {
				t.Fatalf("parse %+v, reference %+v, packet %x", got, want, pkt)
			}
			if fl.inner >= len(pkt) {
				t.Fatalf("inner offset %d past the packet (%d)", fl.inner, len(pkt))
			}
		}
		filt.Outbound(pkt)
		filt.Inbound(pkt)
	})
}

// TestExtensionHeaderLimit: eight IPv6 extension headers are walked, a
// ninth makes the packet malformed (parse and the oracle agree).
func TestExtensionHeaderLimit(t *testing.T) {
	build := func(n int) []byte {
		p := tcp(lap6, 1, srv6, 22, tcpSYN)
		l4 := p[40:]
		var ext []byte
		for i := range n {
			next := byte(protoDstOpts)
			if i == n-1 {
				next = protoTCP
			}
			ext = append(ext, next, 0, 0, 0, 0, 0, 0, 0)
		}
		out := append(append(append([]byte{}, p[:40]...), ext...), l4...)
		if n > 0 {
			out[6] = protoDstOpts
		}
		out[4], out[5] = byte((len(out)-40)>>8), byte(len(out)-40)
		return out
	}
	for n, want := range map[int]bool{0: true, 1: true, 8: true, 9: false} {
		var fl flow
		got := parse(build(n), &fl)
		_, ref := refParse(build(n))
		if got != want || ref != want || (got && fl.dport != 22) {
			t.Errorf("%d extension headers: parse %v (port %d), reference %v, want %v", n, got, fl.dport, ref, want)
		}
	}
}
