package netstack

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Kernel GSO limits for a UDP message: 64 KiB less the Ethernet, IP and
// UDP headers, over an IPv4 and an IPv6 underlay.
const (
	kernelGSOMax4 = 1<<16 - 14 - 20 - 8
	kernelGSOMax6 = 1<<16 - 14 - 40 - 8
)

// wgMessages models, independently of sendRun, how wireguard-go's
// conn.coalesceMessages groups one Send call's packets into UDP messages,
// and returns each message's payload size and datagram count.
func wgMessages(sizes []int, mtu int) (bytes, dgrams []int) {
	wire := func(n int) int {
		pad := 0
		if n%16 != 0 {
			pad = 16 - n%16
		}
		if n+pad > mtu {
			pad = max(0, mtu-n)
		}
		return n + pad + 32
	}
	gsoSize, closed := 0, false
	for i, n := range sizes {
		w := wire(n)
		last := len(bytes) - 1
		if i > 0 && !closed && w <= gsoSize && dgrams[last] < 64 && bytes[last]+w <= 1<<16-1-20-8 {
			bytes[last] += w
			dgrams[last]++
			closed = w < gsoSize
			continue
		}
		bytes, dgrams = append(bytes, w), append(dgrams, 1)
		gsoSize, closed = w, false
	}
	return bytes, dgrams
}

// writeKeep hands pkt to the endpoint; the caller keeps its reference.
func writeKeep(t *testing.T, e *linkEndpoint, pkt *stack.PacketBuffer) {
	t.Helper()
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if n, err := e.WritePackets(l); n != 1 || err != nil {
		t.Fatalf("WritePackets: %d, %v", n, err)
	}
}

// queueGSO queues a TCP super-segment as gVisor hands one to the endpoint.
func queueGSO(t *testing.T, e *linkEndpoint, seq uint32, payload []byte, mss int) {
	t.Helper()
	p := tcpPacket(false, seq, byte(header.TCPFlagAck|header.TCPFlagPsh), optTimestamps, payload, false)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: uint16(mss), L3HdrLen: 20, MaxSize: gsoMaxSize}
	writeKeep(t, e, pkt)
	pkt.DecRef()
}

// TestReadKeepsMessagesUnderKernelGSOLimit feeds the endpoint what gVisor
// sends at the default MTU with SACK on (1,340-byte payloads, 1,392-byte
// packets, 1,424 bytes encrypted: 46 of them would make a 65,504-byte
// message) and checks that no batch lets wireguard-go build a UDP message
// the kernel would have to segment, that batches stay large, and that the
// byte stream comes out whole and in order.
func TestReadKeepsMessagesUnderKernelGSOLimit(t *testing.T) {
	const mtu, mss, supers = 1420, 1340, 8
	e := newLinkEndpoint(mtu)
	defer e.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	seq := uint32(1000)
	for range supers {
		payload := make([]byte, 47*mss) // gVisor's largest at this MSS
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		queueGSO(t, e, seq, payload, mss)
		seq += uint32(len(payload))
		want = append(want, payload...)
	}
	const offset = 16
	bufs, sizes := newBufs(linkBatchSize), make([]int, linkBatchSize)
	var got []byte
	next := uint32(1000)
	for len(got) < len(want) {
		n, err := e.read(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			tcp, payload := checkPacket(t, bufs[i][offset:offset+sizes[i]])
			if s := binary.BigEndian.Uint32(tcp[4:]); s != next {
				t.Fatalf("segment at seq %d, want %d", s, next)
			}
			next += uint32(len(payload))
			got = append(got, payload...)
		}
		msgBytes, msgDgrams := wgMessages(sizes[:n], mtu)
		for i, b := range msgBytes {
			if b > kernelGSOMax6 {
				t.Fatalf("batch of %d packets: message %d is %d bytes in %d datagrams, over the kernel's GSO limit (%d over IPv4, %d over IPv6)",
					n, i, b, msgDgrams[i], kernelGSOMax4, kernelGSOMax6)
			}
		}
		// Full runs of 1,424-byte datagrams: 45 fit under the bound.
		if len(got) < len(want) && n < 45 {
			t.Fatalf("batch of %d packets before the end: the bound cuts batches too short", n)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("stream differs after segmentation")
	}
}

// TestReadBoundsPlainPacketRuns checks the bound for packets the stack
// sends without GSO, such as a UDP flow of equal-size datagrams.
func TestReadBoundsPlainPacketRuns(t *testing.T) {
	const mtu = 1420
	e := newLinkEndpoint(mtu)
	defer e.Close()
	const count = 300
	var l stack.PacketBufferList
	for i := range count {
		p := tcpPacket(false, uint32(i), byte(header.TCPFlagAck), nil, make([]byte, 1352), true) // 1,392 bytes
		l.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)}))
	}
	if n, err := e.WritePackets(l); n != count || err != nil {
		t.Fatalf("WritePackets: %d, %v", n, err)
	}
	l.DecRef()
	bufs, sizes := newBufs(linkBatchSize), make([]int, linkBatchSize)
	for total := 0; total < count; {
		n, err := e.read(bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if got := binary.BigEndian.Uint32(bufs[i][24:]); got != uint32(total+i) {
				t.Fatalf("packet %d out of order: seq %d", total+i, got)
			}
		}
		total += n
		msgBytes, _ := wgMessages(sizes[:n], mtu)
		for _, b := range msgBytes {
			if b > kernelGSOMax6 {
				t.Fatalf("a %d-byte message from a batch of %d", b, n)
			}
		}
	}
}

func TestWGWireSize(t *testing.T) {
	for _, c := range []struct{ size, mtu, want int }{
		{1392, 1420, 1424}, // already a multiple of 16
		{1420, 1420, 1452}, // full MTU: no padding past it
		{1410, 1420, 1452}, // padded up to the MTU, not to 1,424
		{1, 1420, 48},
		{60, 1420, 96},
		{100, 0, 144}, // no MTU: plain multiple of 16
	} {
		if got := wgWireSize(c.size, c.mtu); got != c.want {
			t.Errorf("wgWireSize(%d, %d) = %d, want %d", c.size, c.mtu, got, c.want)
		}
	}
}

func TestSendRun(t *testing.T) {
	var r sendRun
	if got := r.room(1424); got != 45 {
		t.Fatalf("room in a new message for 1,424-byte datagrams = %d, want 45", got)
	}
	for range 45 {
		r.add(1424)
	}
	if got := r.room(1424); got != 0 {
		t.Fatalf("room after 45 = %d, want 0", got)
	}
	if got := r.room(1500); got != 43 {
		t.Fatalf("a larger datagram starts a new message: room %d, want 43", got)
	}
	r = sendRun{}
	r.add(1424)
	r.add(500) // a smaller one closes the message
	if got := r.room(1424); got != 45 {
		t.Fatalf("room after a closed message = %d, want 45", got)
	}
	r = sendRun{}
	for range 64 {
		r.add(96)
	}
	if got := r.room(96); got != 64 {
		t.Fatalf("wireguard-go starts a new message after 64 datagrams: room %d, want 64", got)
	}
}

// TestCloseReleasesPartial checks that Close lets go of a super-segment a
// Read cut only partly into its batch.
func TestCloseReleasesPartial(t *testing.T) {
	e := newLinkEndpoint(1420)
	p := tcpPacket(false, 1, byte(header.TCPFlagAck), optTimestamps, make([]byte, 10*1340), false)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1340, L3HdrLen: 20, MaxSize: gsoMaxSize}
	writeKeep(t, e, pkt)
	bufs, sizes := newBufs(3), make([]int, 3)
	if n, err := e.read(bufs, sizes, 0); n != 3 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	if got := pkt.ReadRefs(); got != 2 {
		t.Fatalf("refs while partly read = %d, want 2 (ours and the endpoint's)", got)
	}
	e.Close()
	if got := pkt.ReadRefs(); got != 1 {
		t.Fatalf("refs after Close = %d, want 1", got)
	}
	if _, err := e.read(bufs, sizes, 0); err == nil {
		t.Fatal("read after Close: no error")
	}
	pkt.DecRef()
}
