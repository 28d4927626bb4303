package netstack

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkBatchSize is how many packets one Read or Write moves: wireguard-go's
// ideal batch (conn.IdealBatchSize), so that it encrypts and sends a whole
// batch per call.
const linkBatchSize = 128

// linkQueueLen bounds the packets the stack has sent and wireguard-go has
// not yet read; beyond it the endpoint drops, like a full NIC ring. With
// GSO one entry is up to 64 KiB.
const linkQueueLen = 1024

// gsoMaxSize is the largest TCP super-segment gVisor may hand over. gVisor
// keeps the payload below it minus the largest headers, so a segment and
// its headers always fit the 16-bit IP length.
const gsoMaxSize = 1 << 16

// linkEndpoint is the stack's NIC and wireguard-go's tun.Device in one:
// packets the stack writes queue until wireguard-go reads them in a batch,
// cut to MTU size (GSO); packets wireguard-go writes are coalesced (GRO)
// and delivered to the stack.
type linkEndpoint struct {
	mtu atomic.Uint32

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher

	mu     sync.Mutex
	queue  []*stack.PacketBuffer // outbound, oldest first from head
	head   int
	closed bool
	// ready holds a token while the queue may be non-empty.
	ready chan struct{}
	done  chan struct{}
	ack   ackHold    // a pure ACK held back for a reply to carry (ackhold.go)
	tail  tailProbes // retransmissions, to spot spurious ones (tailprobe.go)

	// readMu serializes readers; partial and its segment index are the
	// rest of a super-segment that did not fit the previous batch.
	readMu       sync.Mutex
	partial      *stack.PacketBuffer
	partialFirst int
	slices       [][]byte

	drops atomic.Uint64
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)
var _ stack.GSOEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(mtu int) *linkEndpoint {
	e := &linkEndpoint{
		queue: make([]*stack.PacketBuffer, 0, 64),
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
		ack:   ackHold{wait: ackHoldTime},
	}
	e.mtu.Store(uint32(mtu))
	return e
}

// MTU implements stack.LinkEndpoint.
func (e *linkEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *linkEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: there is no link header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: an IP tunnel has none.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
//
// Receive checksum offload: every packet wireguard-go writes has passed
// ChaCha20-Poly1305 authentication of the whole packet under the sending
// member's session key, so it arrived exactly as that member's stack
// built it; an Internet checksum (which catches far less) adds nothing,
// and gVisor may skip verifying it. Packets the endpoint coalesces get
// correct checksums all the same (see gro.go). Transmit checksums stay
// with gVisor except for GSO segments, which the endpoint completes.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*linkEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint: the endpoint cuts segments
// itself, the way a NIC does for a host.
func (*linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// Attach implements stack.LinkEndpoint.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.dmu.Lock()
	e.dispatcher = d
	e.dmu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	e.dmu.RLock()
	defer e.dmu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint; the endpoint runs no goroutines.
func (*linkEndpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.
func (*linkEndpoint) SetOnCloseAction(func()) {}

// Close implements stack.LinkEndpoint. It wakes a blocked Read, which then
// returns os.ErrClosed, and drops what is queued.
func (e *linkEndpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	close(e.done)
	q := e.queue[e.head:]
	e.queue, e.head = nil, 0
	if e.ack.held != nil {
		e.ack.timer.Stop()
		q = append(q, e.ack.held)
		e.ack.held = nil
	}
	e.mu.Unlock()
	for _, pkt := range q {
		pkt.DecRef()
	}
	// A blocked reader returns once done is closed; then the rest of a
	// super-segment it left behind can go.
	e.readMu.Lock()
	if e.partial != nil {
		e.partial.DecRef()
		e.partial = nil
	}
	e.readMu.Unlock()
}

// WritePackets implements stack.LinkEndpoint: it queues the packets for
// wireguard-go, except a pure ACK it may hold back (ackhold.go).
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	queued := len(e.queue) - e.head
	for _, pkt := range pkts.AsSlice() {
		if !e.admitLocked(pkt) {
			break
		}
		n++
	}
	// A held ACK alone wakes nobody.
	wake := len(e.queue)-e.head > queued
	e.mu.Unlock()
	if wake {
		e.wakeReader()
	}
	if dropped := pkts.Len() - n; dropped > 0 {
		e.drops.Add(uint64(dropped))
		if n == 0 {
			return 0, &tcpip.ErrNoBufferSpace{}
		}
	}
	return n, nil
}

// queueFullLocked reports whether the queue holds linkQueueLen packets.
func (e *linkEndpoint) queueFullLocked() bool { return len(e.queue)-e.head >= linkQueueLen }

// pushLocked appends pkt, whose reference the queue takes, to the queue.
func (e *linkEndpoint) pushLocked(pkt *stack.PacketBuffer) { e.queue = append(e.queue, pkt) }

// wakeReader tells a Read waiting for packets that the queue may have some.
func (e *linkEndpoint) wakeReader() {
	select {
	case e.ready <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued packet, or nil.
func (e *linkEndpoint) pop() *stack.PacketBuffer {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.head == len(e.queue) {
		return nil
	}
	pkt := e.queue[e.head]
	e.queue[e.head] = nil
	e.head++
	if e.head == len(e.queue) {
		// Empty: start over at the front, keeping the array.
		e.queue, e.head = e.queue[:0], 0
	}
	return pkt
}

// read implements tun.Device.Read: it blocks until the stack has sent a
// packet, then fills the batch with every packet that is ready, cutting
// super-segments into MTU-sized packets on the way. It ends the batch
// early where wireguard-go would otherwise build a UDP message the kernel
// has to segment in software (see sendrun.go).
func (e *linkEndpoint) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	e.readMu.Lock()
	defer e.readMu.Unlock()
	mtu := int(e.mtu.Load())
	var run sendRun
	n := 0
	for n < len(bufs) {
		pkt, first := e.partial, e.partialFirst
		e.partial, e.partialFirst = nil, 0
		if pkt == nil {
			pkt = e.pop()
		}
		if pkt == nil {
			if n > 0 {
				break
			}
			select {
			case <-e.ready:
				continue
			case <-e.done:
				return 0, os.ErrClosed
			}
		}
		w, done := e.writeOut(pkt, first, bufs[n:], sizes[n:], offset, mtu, &run)
		n += w
		if !done {
			e.partial, e.partialFirst = pkt, first+w
			if w == 0 {
				break // the rest of the batch goes out in the next Read
			}
			continue
		}
		pkt.DecRef()
	}
	return n, nil
}

// writeOut copies pkt into bufs (cut into segments from first when it is a
// super-segment) as far as run allows, and returns how many buffers it
// filled and whether the packet is finished with. A packet that cannot be
// sent is dropped.
func (e *linkEndpoint) writeOut(pkt *stack.PacketBuffer, first int, bufs [][]byte, sizes []int, offset, mtu int, run *sendRun) (int, bool) {
	e.slices = e.slices[:0]
	vl, skip := pkt.AsViewList()
	size := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		e.slices = append(e.slices, s)
		size += len(s)
	}
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone || !gso.NeedsCsum {
		dst := bufs[0][offset:]
		if size > len(dst) {
			e.drops.Add(1)
			return 0, true
		}
		wire := wgWireSize(size, mtu)
		if run.room(wire) == 0 {
			return 0, false
		}
		n := 0
		for _, s := range e.slices {
			n += copy(dst[n:], s)
		}
		sizes[0] = n
		run.add(wire)
		return 1, true
	}
	mss := int(gso.MSS)
	if mss == 0 {
		mss = size
	}
	seg, err := gsoSegmentSize(e.slices, size, mss)
	if err != nil {
		e.drops.Add(1)
		return 0, true
	}
	// Segments after the first are no larger, so counting each at the
	// first one's size stays within the run's bound.
	room := run.room(wgWireSize(seg, mtu))
	if room == 0 {
		return 0, false
	}
	w, done, err := gsoSplit(e.slices, size, mss, first, bufs[:min(len(bufs), room)], sizes, offset)
	for _, sz := range sizes[:w] {
		run.add(wgWireSize(sz, mtu))
	}
	if err != nil {
		e.drops.Add(1)
		return w, true
	}
	return w, done
}

// groPool holds the coalescing tables of concurrent writers (one per peer
// in wireguard-go).
var groPool = sync.Pool{New: func() any { return new(groTable) }}

// write implements tun.Device.Write: it coalesces the batch and delivers
// it to the stack.
func (e *linkEndpoint) write(bufs [][]byte, offset int) (int, error) {
	e.dmu.RLock()
	d := e.dispatcher
	e.dmu.RUnlock()
	if d == nil {
		return 0, os.ErrClosed
	}
	t := groPool.Get().(*groTable)
	defer groPool.Put(t)
	pkts := t.pkts[:0]
	for _, b := range bufs {
		if len(b) > offset {
			p := b[offset:]
			if q := e.tail.received(p); q != nil {
				p = q
			}
			pkts = append(pkts, p)
		}
	}
	t.pkts = pkts
	var err error
	var view *buffer.View
	t.coalesce(pkts, func(size int) []byte {
		view = buffer.NewViewSize(size)
		return view.AsSlice()
	}, func(p []byte, coalesced bool) {
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			err = syscall.EAFNOSUPPORT
			return
		}
		var payload buffer.Buffer
		if coalesced {
			payload = splitHeaders(p, view)
			view = nil
		} else {
			payload = splitHeaders(p, nil)
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	})
	// Clear references into wireguard-go's buffers.
	clear(t.pkts)
	if err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// splitHeaders makes the buffer of an inbound packet: its IP and TCP
// headers in a small chunk of their own, the payload in v. gVisor's IP
// layer keeps a reference to the chunk that holds the IP header while it
// reads that header again, and a chunk with two references is copied whole
// before the read (buffer.PullUp): with one chunk for the packet, every
// received byte was cleared and copied once more, 64 KiB per coalesced
// segment. v, when not nil, holds the packet p and the buffer takes it
// over; otherwise p is copied.
func splitHeaders(p []byte, v *buffer.View) buffer.Buffer {
	n := headersLen(p)
	if n == 0 || n >= len(p) {
		if v == nil {
			return buffer.MakeWithData(p)
		}
		return buffer.MakeWithView(v)
	}
	if v == nil {
		v = buffer.NewViewWithData(p[n:])
	} else {
		v.TrimFront(n)
	}
	b := buffer.MakeWithView(buffer.NewViewWithData(p[:n]))
	rest := buffer.MakeWithView(v)
	b.Merge(&rest) // links v as is; Append would copy into the header chunk
	return b
}

// headersLen is the length of the IP header of packet p and, for an
// unfragmented TCP segment, of its TCP header too; 0 if p is too short to
// say. Any split point is correct (gVisor joins headers that span chunks),
// so this only has to be right for the common case.
func headersLen(p []byte) int {
	var n int
	var tcp bool
	switch {
	case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
		n = int(p[0]&0xf) * 4
		flags := binary.BigEndian.Uint16(p[6:])
		tcp = p[9] == uint8(header.TCPProtocolNumber) && flags&0x3fff == 0 // no MF, offset 0
	case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
		n = header.IPv6MinimumSize
		tcp = p[6] == uint8(header.TCPProtocolNumber)
	default:
		return 0
	}
	if n > len(p) {
		return 0
	}
	if tcp && len(p) >= n+header.TCPMinimumSize {
		if t := n + int(p[n+12]>>4)*4; t <= len(p) {
			n = t
		}
	}
	return n
}
