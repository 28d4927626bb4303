package netstack

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Spurious tail loss probes. When ACKs stop coming for two smoothed round
// trips, gVisor's sender retransmits one segment from its highest
// super-segment (RACK's tail loss probe) and remembers what it had sent
// then (tlpHighRxt). The first ACK to reach that point ends the episode,
// and unless it carries a D-SACK, gVisor counts a loss and halves the
// congestion window. Two gVisor stacks never get that D-SACK: gVisor's
// receiver does not send them, and the ACK that reaches the point is
// usually the one for the original segments, sent before the probe even
// arrived. On a sub-millisecond path, where SRTT sits at gVisor's 1 ms
// floor, a scheduling hiccup in the ACK stream is enough to fire a probe,
// so a bulk stream halves its window a few times a second with nothing
// lost (Linux ends the episode only on an ACK past the point, or on the
// duplicate ACK the probe causes, and its receivers send D-SACKs).
//
// The endpoint supplies the missing evidence from timestamps (RFC 3522's
// idea): it notes every retransmission it carries out, with its TSval and
// the highest sequence sent so far. When an ACK reaching that sequence
// comes in and echoes a timestamp older than the retransmission's, the
// receiver advanced that far on segments sent before the retransmission,
// so the retransmitted range arrived twice: the endpoint adds the D-SACK
// block the receiver would have sent (RFC 2883), and gVisor sees no loss.
// An ACK that echoes the retransmission's own timestamp (the probe
// repaired a loss) passes unchanged, as does any ACK that already carries
// SACK blocks. This runs on the sending side only, so it also helps when
// the other end is not gVisor.

// fixTailProbes turns the correction on; the benchmarks compare.
var fixTailProbes = true

// maxTailFlows bounds the connections followed; beyond it an arbitrary one
// is forgotten (it then merely loses the correction until it sends again).
const maxTailFlows = 4096

// dsackOptionLen is what the added option takes: two NOPs, then kind,
// length and one block.
const dsackOptionLen = 12

// tailProbes is the per-connection record; its methods are safe for
// concurrent use.
type tailProbes struct {
	// waiting counts connections with a retransmission whose ACK has not
	// come, so that inbound packets cost one atomic load when there are
	// none.
	waiting atomic.Int32
	// fixed counts ACKs that got a D-SACK block (tests, diagnostics).
	fixed atomic.Uint64

	mu    sync.Mutex
	flows map[tcpFlow]*tailFlow
}

// tailFlow is one connection as its outbound segments show it.
type tailFlow struct {
	sndNxt uint32 // end of the highest sequence sent
	// The last retransmission, while its ACK is awaited.
	rtx              bool
	rtxStart, rtxEnd uint32
	rtxTS            uint32 // TSval of the episode's first retransmission
	rtxHigh          uint32 // sndNxt when it went out
}

// sent records an outbound TCP segment of flow: seq, n bytes of payload
// and its TCP options (read only for a retransmission, which is rare).
func (t *tailProbes) sent(flow tcpFlow, flags header.TCPFlags, seq uint32, n int, options []byte) {
	if flags&(header.TCPFlagFin|header.TCPFlagRst) != 0 {
		t.forget(flow)
		return
	}
	if n == 0 {
		return
	}
	end := seq + uint32(n)
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[flow]
	if f == nil {
		if t.flows == nil {
			t.flows = make(map[tcpFlow]*tailFlow)
		}
		if len(t.flows) >= maxTailFlows {
			for k := range t.flows {
				t.dropLocked(k)
				break
			}
		}
		t.flows[flow] = &tailFlow{sndNxt: end}
		return
	}
	if int32(end-f.sndNxt) > 0 {
		f.sndNxt = end
		return
	}
	// Nothing beyond what was sent before: a retransmission.
	opts := header.ParseTCPOptions(options)
	if !opts.TS {
		return // no timestamp to tell the ACKs apart by
	}
	if !f.rtx {
		f.rtx = true
		t.waiting.Add(1)
		// The episode's first retransmission sets the timestamp an ACK
		// must predate: an ACK for that first copy, arriving after a
		// second one went out (a probe, then a timeout), shows a repair,
		// not a duplicate.
		f.rtxTS = opts.TSVal
	}
	f.rtxStart, f.rtxEnd, f.rtxHigh = seq, end, f.sndNxt
}

// forget drops flow's record (the connection is closing).
func (t *tailProbes) forget(flow tcpFlow) {
	t.mu.Lock()
	t.dropLocked(flow)
	t.mu.Unlock()
}

func (t *tailProbes) dropLocked(flow tcpFlow) {
	if f := t.flows[flow]; f != nil {
		if f.rtx {
			t.waiting.Add(-1)
		}
		delete(t.flows, flow)
	}
}

// received inspects an inbound IP packet p and returns it with a D-SACK
// block added when it is the ACK that shows a retransmission to have been
// a duplicate; otherwise it returns nil and p is delivered as it is.
func (t *tailProbes) received(p []byte) []byte {
	if t.waiting.Load() == 0 || !fixTailProbes {
		return nil
	}
	ipLen, ok := tcpIPHeaderLen(p)
	if !ok || len(p) < ipLen+tcpHeaderLen {
		return nil
	}
	tcp := p[ipLen:]
	if tcp[13]&(tcpFlagACK|tcpFlagSYN|tcpFlagRST) != tcpFlagACK {
		return nil
	}
	// The record is keyed as the outbound segments name the connection:
	// addresses and ports swapped.
	var flow tcpFlow
	if p[0]>>4 == 4 {
		copy(flow.addrs[:4], p[16:20])
		copy(flow.addrs[4:8], p[12:16])
	} else {
		copy(flow.addrs[:16], p[24:40])
		copy(flow.addrs[16:], p[8:24])
		flow.v6 = true
	}
	flow.ports = uint32(binary.BigEndian.Uint16(tcp[2:]))<<16 | uint32(binary.BigEndian.Uint16(tcp[0:]))
	ack := binary.BigEndian.Uint32(tcp[8:])

	t.mu.Lock()
	f := t.flows[flow]
	if f == nil || !f.rtx || int32(ack-f.rtxHigh) < 0 {
		t.mu.Unlock()
		return nil
	}
	// This ACK ends the episode either way.
	f.rtx = false
	t.waiting.Add(-1)
	start, end, rtxTS := f.rtxStart, f.rtxEnd, f.rtxTS
	t.mu.Unlock()

	tcpLen := int(tcp[12]>>4) * 4
	if tcpLen < tcpHeaderLen || tcpLen > len(tcp) || tcpLen+dsackOptionLen > 60 {
		return nil
	}
	if hasSACKBlocks(header.TCP(tcp)) { // or malformed options
		return nil
	}
	opts := header.ParseTCPOptions(tcp[tcpHeaderLen:tcpLen])
	if !opts.TS {
		return nil
	}
	if int32(opts.TSEcr-rtxTS) >= 0 {
		return nil // the retransmission itself was acknowledged
	}
	t.fixed.Add(1)
	return withDSACK(p, ipLen, tcpLen, start, end)
}

// withDSACK returns a copy of the TCP/IP packet p with a SACK option of one
// block, [start, end), appended to its TCP options, and its lengths and
// checksums made right.
func withDSACK(p []byte, ipLen, tcpLen int, start, end uint32) []byte {
	size := len(p)
	if p[0]>>4 == 4 {
		size = int(binary.BigEndian.Uint16(p[2:]))
	} else {
		size = ipv6HeaderLen + int(binary.BigEndian.Uint16(p[4:]))
	}
	size = min(size, len(p))
	q := make([]byte, size+dsackOptionLen)
	hdr := ipLen + tcpLen
	copy(q, p[:hdr])
	o := q[hdr : hdr+dsackOptionLen]
	o[0], o[1], o[2], o[3] = header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACK, 10
	binary.BigEndian.PutUint32(o[4:], start)
	binary.BigEndian.PutUint32(o[8:], end)
	copy(q[hdr+dsackOptionLen:], p[hdr:size])
	tcp := q[ipLen:]
	tcp[12] = byte((tcpLen+dsackOptionLen)/4)<<4 | tcp[12]&0x0f
	if q[0]>>4 == 4 {
		binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
		setIPv4Checksum(q[:ipLen])
	} else {
		binary.BigEndian.PutUint16(q[4:], uint16(len(q)-ipv6HeaderLen))
	}
	setTCPChecksum(q, tcp)
	return q
}
