package netstack

import (
	"encoding/binary"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Delayed ACKs. gVisor's TCP acknowledges received data at once, every
// time: it has no delayed ACK. In request/response traffic (a 1-byte
// ping-pong, an RPC, an interactive shell) the reply follows the request
// within microseconds, and the pure ACK sent in between costs a whole extra
// trip through wireguard-go and the peer's stack: encryption, a UDP send,
// decryption and several goroutine hand-offs on both members. Kernel TCP
// avoids that with delayed ACKs, and so does the endpoint: it holds a pure
// ACK back for at most ackHoldTime, and drops it if a segment of the same
// connection that acknowledges as much goes out in the meantime (the
// reply, which carries the ACK along).
//
// Only an ACK that acknowledges less than one MTU of new data is held
// (RFC 9293 3.8.6.3: acknowledge at least every second full-sized segment),
// and only when the last segment this side sent on the connection carried
// data, that is when the connection takes turns, like Linux's "pingpong"
// mode. A bulk receiver sends nothing but ACKs, so none of them waits,
// and a request answered by many segments delays at most the first ACK.
// Duplicate ACKs, ACKs with SACK blocks, window updates that acknowledge
// nothing new and every segment with SYN, FIN or RST go out at once, in
// order. The endpoint follows one connection at a time, the last one it
// sent a TCP segment for; with many connections interleaving it holds
// less, never more.

// ackHoldTime bounds how long a pure ACK waits for a reply to carry it:
// far above the time a local service takes to answer, far below the
// 200 ms that RFC 9293 permits and the 40 ms Linux waits. Zero turns the
// hold off (the benchmarks compare).
var ackHoldTime = time.Millisecond

// tcpFlow names a connection by its addresses and ports, as they appear in
// the packets it sends.
type tcpFlow struct {
	addrs [32]byte // source then destination; IPv4 uses the first 8 bytes
	ports uint32
	v6    bool
}

// tcpSegment is what the ACK hold needs to know about an outbound packet.
type tcpSegment struct {
	flow  tcpFlow
	flags header.TCPFlags
	ack   uint32
	// bare: only the ACK flag and no payload.
	bare bool
	// data: the segment carries payload.
	data bool
	// pureACK: bare, without SACK blocks.
	pureACK bool
	seq     uint32
	size    int    // payload bytes
	options []byte // the TCP options, valid while the packet is
}

// parseSegment reads the headers gVisor put in front of an outbound packet;
// ok is false for anything but TCP over IPv4 or IPv6.
func parseSegment(pkt *stack.PacketBuffer) (s tcpSegment, ok bool) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return s, false
	}
	nh := pkt.NetworkHeader().Slice()
	tcp := header.TCP(pkt.TransportHeader().Slice())
	if len(tcp) < header.TCPMinimumSize {
		return s, false
	}
	switch {
	case len(nh) >= header.IPv4MinimumSize && nh[0]>>4 == 4:
		copy(s.flow.addrs[:8], nh[12:20])
	case len(nh) >= header.IPv6MinimumSize && nh[0]>>4 == 6:
		copy(s.flow.addrs[:], nh[8:40])
		s.flow.v6 = true
	default:
		return s, false
	}
	s.flow.ports = binary.BigEndian.Uint32(tcp[0:4])
	s.flags = tcp.Flags()
	s.ack = tcp.AckNumber()
	s.seq = tcp.SequenceNumber()
	s.size = pkt.Data().Size()
	s.data = s.size > 0
	if off := int(tcp.DataOffset()); off > header.TCPMinimumSize && off <= len(tcp) {
		s.options = tcp[header.TCPMinimumSize:off]
	}
	s.bare = s.flags == header.TCPFlagAck && !s.data
	s.pureACK = s.bare && !hasSACKBlocks(tcp)
	return s, true
}

// hasSACKBlocks reports whether the TCP options carry a SACK option.
func hasSACKBlocks(tcp header.TCP) bool {
	off := int(tcp.DataOffset())
	if off < header.TCPMinimumSize || off > len(tcp) {
		return true // malformed: never hold it
	}
	opts := tcp[header.TCPMinimumSize:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		case header.TCPOptionSACK:
			return true
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

// ackHold is the endpoint's delayed-ACK state, guarded by linkEndpoint.mu.
type ackHold struct {
	flow     tcpFlow // connection of the last TCP segment sent or held
	tracking bool
	lastAck  uint32 // ACK number that last went out on flow
	ackValid bool   // lastAck is known (the SYN carries none)
	// replied: the last segment that went out on flow carried data, so
	// the connection takes turns and a reply is likely to follow again.
	replied bool

	held    *stack.PacketBuffer // the pure ACK held back, or nil
	heldAck uint32
	timer   *time.Timer
	wait    time.Duration // ackHoldTime; tests lengthen it
}

// admitLocked queues pkt for wireguard-go or holds it back, and settles a
// held ACK that pkt supersedes or must follow. It reports false when the
// queue is full and pkt was not taken. e.mu is held.
func (e *linkEndpoint) admitLocked(pkt *stack.PacketBuffer) bool {
	if e.queueFullLocked() {
		return false
	}
	h := &e.ack
	s, isTCP := parseSegment(pkt)
	if h.held != nil {
		switch e.settleHeldLocked(s, isTCP) {
		case heldReplaced:
			h.held.DecRef()
			h.held, h.heldAck = pkt.IncRef(), s.ack
			return true
		case heldSuperseded:
			h.held.DecRef()
			h.held = nil
			h.timer.Stop()
		case heldFirst:
			e.releaseHeldLocked()
		}
	}
	if !isTCP {
		e.pushLocked(pkt.IncRef())
		return true
	}
	e.tail.sent(s.flow, s.flags, s.seq, s.size, s.options)
	if e.holdableLocked(s) {
		h.held, h.heldAck = pkt.IncRef(), s.ack
		if h.timer == nil {
			h.timer = time.AfterFunc(h.wait, e.ackHoldExpired)
		} else {
			h.timer.Reset(h.wait)
		}
		return true
	}
	if !h.tracking || s.flow != h.flow {
		h.flow, h.tracking, h.ackValid = s.flow, true, false
	}
	if s.flags&header.TCPFlagAck != 0 {
		h.lastAck, h.ackValid = s.ack, true
	}
	h.replied = s.data
	e.pushLocked(pkt.IncRef())
	return true
}

// What becomes of the held ACK when another packet goes out.
const (
	heldFirst      = iota // it goes out first, then the packet
	heldSuperseded        // the packet acknowledges as much: drop it
	heldReplaced          // the packet is a newer ACK to hold in its place
)

// settleHeldLocked decides what becomes of the held ACK when segment s (or
// a packet that is not TCP) goes out. A bare ACK with the held one's ACK
// number is a duplicate ACK or a window update: both go out, since a
// sender counts duplicate ACKs to detect loss.
func (e *linkEndpoint) settleHeldLocked(s tcpSegment, isTCP bool) int {
	h := &e.ack
	if !isTCP || s.flow != h.flow || s.flags&header.TCPFlagAck == 0 || s.flags&header.TCPFlagRst != 0 {
		return heldFirst
	}
	switch d := int32(s.ack - h.heldAck); {
	case d > 0 && e.holdableLocked(s):
		return heldReplaced
	case d > 0 || (d == 0 && !s.bare):
		return heldSuperseded
	}
	return heldFirst
}

// holdableLocked reports whether s is a pure ACK of the followed connection
// that acknowledges some, but less than one MTU of, new data, right after
// this side sent data.
func (e *linkEndpoint) holdableLocked(s tcpSegment) bool {
	h := &e.ack
	if h.wait <= 0 || !s.pureACK || !h.tracking || !h.ackValid || !h.replied || s.flow != h.flow {
		return false
	}
	advance := s.ack - h.lastAck
	return int32(advance) > 0 && advance < e.mtu.Load()
}

// releaseHeldLocked queues the held ACK (dropping it if the queue is full).
func (e *linkEndpoint) releaseHeldLocked() {
	h := &e.ack
	if h.held == nil {
		return
	}
	h.timer.Stop()
	pkt := h.held
	h.held = nil
	if h.tracking {
		h.lastAck, h.ackValid, h.replied = h.heldAck, true, false
	}
	if e.queueFullLocked() {
		pkt.DecRef()
		e.drops.Add(1)
		return
	}
	e.pushLocked(pkt)
}

// ackHoldExpired sends the held ACK when no reply came to carry it.
func (e *linkEndpoint) ackHoldExpired() {
	e.mu.Lock()
	if e.closed || e.ack.held == nil {
		e.mu.Unlock()
		return
	}
	e.releaseHeldLocked()
	e.mu.Unlock()
	e.wakeReader()
}
