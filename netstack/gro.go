package netstack

import (
	"bytes"
	"encoding/binary"
	"math/bits"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// GRO on the way in. wireguard-go hands the endpoint a batch of decrypted
// packets; consecutive in-order TCP segments of one flow are coalesced
// into one large segment before the stack sees them, so that gVisor's IP
// and TCP layers run once per up to 64 KiB instead of once per packet.
//
// Only plain data segments coalesce: same addresses and ports, IP fields
// (TOS/traffic class, TTL/hop limit, DF) and TCP acknowledgement, window
// and options byte for byte (timestamps included), contiguous sequence
// numbers, flags ACK and at most a PSH on the last, no SYN, FIN, RST, URG,
// ECE or CWR, and no more than 64 KiB in all. Everything else passes
// through untouched and in order. A coalesced packet gets a fresh IPv4
// header checksum and a TCP checksum derived from its segments' own
// (payloadSum), so it is valid even to a stack that checks.

// maxGROSize bounds a coalesced packet: IPv4's total length and IPv6's
// payload length are 16 bits.
const maxGROSize = 0xffff

// groFlow is a coalesced segment being built: the head packet and the
// packets appended to it.
type groFlow struct {
	head     int    // index of the first packet
	last     int    // index of the last packet appended
	nextSeq  uint32 // sequence number the next segment must start at
	size     int    // size of the coalesced packet so far
	ipLen    int
	tcpLen   int
	open     bool // still accepting segments
	segments int
}

// groTable plans the coalescing of one batch. Reused through a pool, it
// allocates nothing once warm.
type groTable struct {
	pkts  [][]byte // the batch, for the endpoint's use
	flows []groFlow
	// next[i] is the index of the packet appended after packet i in its
	// flow, or -1; member[i] is the flow packet i belongs to, or -1.
	next   []int
	member []int
}

// plan groups the packets of a batch. pkts[i] is a whole IP packet.
func (t *groTable) plan(pkts [][]byte) {
	t.flows = t.flows[:0]
	t.next = t.next[:0]
	t.member = t.member[:0]
	for i, p := range pkts {
		t.next = append(t.next, -1)
		t.member = append(t.member, -1)
		ipLen, tcpLen, size, ok := groCandidate(p)
		if !ok {
			// A packet of a flow that cannot coalesce (a FIN, say)
			// must not be overtaken by later segments of its flow.
			t.closeFlowOf(pkts, p)
			continue
		}
		p = p[:size]
		payload := size - ipLen - tcpLen
		seq := binary.BigEndian.Uint32(p[ipLen+4:])
		if f := t.openFlow(pkts, p, ipLen); f >= 0 {
			fl := &t.flows[f]
			if fl.canAppend(pkts[fl.head], pkts[fl.last], p, ipLen, tcpLen, seq, size) {
				t.next[fl.last] = i
				t.member[i] = f
				fl.last = i
				fl.nextSeq = seq + uint32(payload)
				fl.size += payload
				fl.segments++
				if p[ipLen+13]&tcpFlagPSH != 0 {
					fl.open = false
				}
				continue
			}
			fl.open = false
		}
		t.flows = append(t.flows, groFlow{
			head: i, last: i, nextSeq: seq + uint32(payload), size: size,
			ipLen: ipLen, tcpLen: tcpLen, open: p[ipLen+13]&tcpFlagPSH == 0, segments: 1,
		})
		t.member[i] = len(t.flows) - 1
	}
}

// openFlow returns the open flow that packet p (IP header length ipLen)
// belongs to, or -1.
func (t *groTable) openFlow(pkts [][]byte, p []byte, ipLen int) int {
	for f := len(t.flows) - 1; f >= 0; f-- {
		fl := &t.flows[f]
		if fl.open && fl.ipLen == ipLen && sameFlow(pkts[fl.head], p, ipLen) {
			return f
		}
	}
	return -1
}

// closeFlowOf closes the open flow packet p belongs to, if p is TCP.
func (t *groTable) closeFlowOf(pkts [][]byte, p []byte) {
	ipLen, ok := tcpIPHeaderLen(p)
	if !ok {
		return
	}
	if f := t.openFlow(pkts, p, ipLen); f >= 0 {
		t.flows[f].open = false
	}
}

// tcpIPHeaderLen returns the IP header length of a TCP packet with its
// ports in reach.
func tcpIPHeaderLen(p []byte) (int, bool) {
	if len(p) < 1 {
		return 0, false
	}
	switch p[0] >> 4 {
	case 4:
		l := int(p[0]&0x0f) * 4
		if l < ipv4HeaderLen || len(p) < l+4 || p[9] != protoTCP {
			return 0, false
		}
		return l, true
	case 6:
		if len(p) < ipv6HeaderLen+4 || p[6] != protoTCP {
			return 0, false
		}
		return ipv6HeaderLen, true
	}
	return 0, false
}

// sameFlow reports whether a and b (both TCP with IP header length ipLen)
// have the same addresses and ports.
func sameFlow(a, b []byte, ipLen int) bool {
	var addrs []byte
	if a[0]>>4 == 4 {
		if b[0]>>4 != 4 {
			return false
		}
		addrs = a[12:20]
		return bytes.Equal(addrs, b[12:20]) && bytes.Equal(a[ipLen:ipLen+4], b[ipLen:ipLen+4])
	}
	if b[0]>>4 != 6 {
		return false
	}
	return bytes.Equal(a[8:40], b[8:40]) && bytes.Equal(a[ipLen:ipLen+4], b[ipLen:ipLen+4])
}

// groCandidate checks that p is a TCP data segment that may coalesce and
// returns its header lengths and its size by its IP header.
func groCandidate(p []byte) (ipLen, tcpLen, size int, ok bool) {
	if len(p) < 1 {
		return 0, 0, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		// IPv4 options are rare and would have to match; skip them.
		if len(p) < ipv4HeaderLen || p[0]&0x0f != 5 || p[9] != protoTCP {
			return 0, 0, 0, false
		}
		// Fragments, and the reserved flag, never coalesce.
		if binary.BigEndian.Uint16(p[6:])&^0x4000 != 0 {
			return 0, 0, 0, false
		}
		ipLen = ipv4HeaderLen
		size = int(binary.BigEndian.Uint16(p[2:]))
	case 6:
		if len(p) < ipv6HeaderLen || p[6] != protoTCP {
			return 0, 0, 0, false
		}
		ipLen = ipv6HeaderLen
		size = ipv6HeaderLen + int(binary.BigEndian.Uint16(p[4:]))
	default:
		return 0, 0, 0, false
	}
	if size > len(p) || size < ipLen+tcpHeaderLen {
		return 0, 0, 0, false
	}
	tcpLen = int(p[ipLen+12]>>4) * 4
	if tcpLen < tcpHeaderLen || ipLen+tcpLen >= size {
		// Too short, or no payload: pure ACKs pass through.
		return 0, 0, 0, false
	}
	if p[ipLen+12]&0x0f != 0 || p[ipLen+13]&^(tcpFlagACK|tcpFlagPSH) != 0 || p[ipLen+13]&tcpFlagACK == 0 {
		return 0, 0, 0, false
	}
	return ipLen, tcpLen, size, true
}

// canAppend reports whether segment p may follow last in the flow that
// starts with head.
func (fl *groFlow) canAppend(head, last, p []byte, ipLen, tcpLen int, seq uint32, size int) bool {
	if tcpLen != fl.tcpLen || seq != fl.nextSeq || fl.size+size-ipLen-tcpLen > maxGROSize {
		return false
	}
	if last[ipLen+13]&tcpFlagPSH != 0 {
		return false
	}
	if head[0]>>4 == 4 {
		// TOS, flags (DF) and TTL.
		if head[1] != p[1] || head[6]&0xe0 != p[6]&0xe0 || head[8] != p[8] {
			return false
		}
	} else {
		// Traffic class, flow label and hop limit.
		if !bytes.Equal(head[0:4], p[0:4]) || head[7] != p[7] {
			return false
		}
	}
	h, q := head[ipLen:], p[ipLen:]
	// Acknowledgement, data offset, window and options must match.
	return bytes.Equal(h[8:12], q[8:12]) && h[12] == q[12] &&
		bytes.Equal(h[14:16], q[14:16]) && bytes.Equal(h[tcpHeaderLen:tcpLen], q[tcpHeaderLen:tcpLen])
}

// build writes the coalesced packet of flow f into dst, which must hold
// f.size bytes.
func (t *groTable) build(pkts [][]byte, f int, dst []byte) []byte {
	fl := &t.flows[f]
	hdrLen := fl.ipLen + fl.tcpLen
	dst = dst[:fl.size]
	n := copy(dst, pkts[fl.head][:hdrLen])
	var (
		flags   byte
		payload uint16 // one's complement sum of the coalesced payload
	)
	for i := fl.head; i >= 0; i = t.next[i] {
		p := pkts[i]
		ipLen := fl.ipLen
		var size int
		if p[0]>>4 == 4 {
			size = int(binary.BigEndian.Uint16(p[2:]))
		} else {
			size = ipLen + int(binary.BigEndian.Uint16(p[4:]))
		}
		// The payload's share of the new checksum, from the segment's
		// own; a part that starts at an odd offset is summed byte-swapped.
		part := payloadSum(p[:ipLen], p[ipLen:size], fl.tcpLen)
		if (n-hdrLen)%2 == 1 {
			part = bits.ReverseBytes16(part)
		}
		payload = checksum.Combine(payload, part)
		n += copy(dst[n:], p[hdrLen:size])
		flags = p[ipLen+13]
	}
	ip := dst[:fl.ipLen]
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(fl.size))
		setIPv4Checksum(ip)
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(fl.size-ipv6HeaderLen))
	}
	// The last segment's PSH, if any, belongs to the whole.
	dst[fl.ipLen+13] = flags
	tcp := dst[fl.ipLen:]
	tcp[16], tcp[17] = 0, 0
	sum := checksum.Combine(checksum.Checksum(tcp[:fl.tcpLen], tcpPseudoSum(ip, len(tcp))), payload)
	binary.BigEndian.PutUint16(tcp[16:], ^sum)
	return dst
}

// payloadSum returns the one's complement sum of the payload of the TCP
// segment tcp (header of tcpLen bytes, then payload) in a packet with IP
// header ip, read off the segment's checksum instead of the payload: a
// valid segment sums to 0xffff with its pseudo-header, so the payload
// sums to the complement of the rest. This spares the coalesced packet a
// second pass over every byte (gVisor trusts the endpoint's checksums,
// see Capabilities, but the packet stays valid to a stack that checks: a
// coalesced segment is valid when its parts were).
func payloadSum(ip, tcp []byte, tcpLen int) uint16 {
	return ^checksum.Checksum(tcp[:tcpLen], tcpPseudoSum(ip, len(tcp)))
}

// coalesce plans pkts and calls emit once per packet to deliver, in
// order: either an original packet (untouched) or a coalesced one built
// into a buffer from alloc.
func (t *groTable) coalesce(pkts [][]byte, alloc func(size int) []byte, emit func(p []byte, coalesced bool)) {
	t.plan(pkts)
	for i, p := range pkts {
		f := t.member[i]
		if f < 0 {
			emit(p, false)
			continue
		}
		fl := &t.flows[f]
		if fl.head != i {
			continue
		}
		if fl.segments == 1 {
			emit(p, false)
			continue
		}
		emit(t.build(pkts, f, alloc(fl.size)), true)
	}
}
