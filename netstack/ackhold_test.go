package netstack

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// countingDevice counts the packets wireguard-go reads from a stack, and
// among them the pure ACKs (no payload, no SYN, FIN or RST).
type countingDevice struct {
	*Stack
	packets, pureACKs atomic.Int64
}

func (d *countingDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Stack.Read(bufs, sizes, offset)
	for i := range n {
		p := bufs[i][offset : offset+sizes[i]]
		d.packets.Add(1)
		if tcpPayloadLen(p) == 0 && tcpFlags(p) == 0x10 {
			d.pureACKs.Add(1)
		}
	}
	return n, err
}

// tcpFlags returns the TCP flags byte of an IPv4 or IPv6 packet.
func tcpFlags(p []byte) byte {
	ipLen := 40
	if p[0]>>4 == 4 {
		ipLen = int(p[0]&0x0f) * 4
	}
	return p[ipLen+13]
}

// TestPingPongCarriesACKsOnReplies checks that in request/response traffic
// the ACK for each message rides on the reply instead of going out as a
// packet of its own: 1-byte ping-pongs through two stacks and wireguard-go
// take one packet per message, not two.
func TestPingPongCarriesACKsOnReplies(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		var a, b *countingDevice
		p := newWGPairWith(t, v6, func(s *Stack) tun.Device {
			d := &countingDevice{Stack: s}
			if a == nil {
				a = d
			} else {
				b = d
			}
			return d
		})
		client, server := p.stream(t)
		go func() {
			_, _ = io.Copy(server, server) // echo
		}()
		const rounds = 300
		startA, startB := a.packets.Load(), b.packets.Load()
		buf := make([]byte, 1)
		for i := range rounds {
			buf[0] = byte(i)
			if _, err := client.Write(buf); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(client, buf); err != nil {
				t.Fatal(err)
			}
			if buf[0] != byte(i) {
				t.Fatalf("round %d: echo %d", i, buf[0])
			}
		}
		sentA, sentB := a.packets.Load()-startA, b.packets.Load()-startB
		t.Logf("v6=%v: %d round trips, A sent %d packets (%d pure ACKs), B sent %d (%d pure ACKs)",
			v6, rounds, sentA, a.pureACKs.Load(), sentB, b.pureACKs.Load())
		// Without delayed ACKs each side sends 2 packets per round; allow
		// for ACKs whose reply came late on a loaded machine.
		if limit := int64(rounds * 3 / 2); sentA > limit || sentB > limit {
			t.Errorf("v6=%v: A sent %d, B sent %d packets for %d round trips; want at most %d each",
				v6, sentA, sentB, rounds, limit)
		}
	}
}

// TestHeldACKGoesOutWithoutReply checks that an ACK with no reply to carry
// it still goes out, within the hold time.
func TestHeldACKGoesOutWithoutReply(t *testing.T) {
	var b *countingDevice
	p := newWGPairWith(t, false, func(s *Stack) tun.Device {
		d := &countingDevice{Stack: s}
		b = d // the second call wraps B
		return d
	})
	client, server := p.stream(t)
	buf := make([]byte, 1)
	for i := range 20 {
		before := b.pureACKs.Load()
		if _, err := client.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, buf); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for b.pureACKs.Load() == before {
			if time.Now().After(deadline) {
				t.Fatalf("message %d: no ACK from B within 5 s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// outbound builds a TCP packet as gVisor hands one to the endpoint, with
// its network and transport headers marked.
func outbound(flags byte, port uint16, ack uint32, opts []byte, payload int) *stack.PacketBuffer {
	p := tcpPacket(false, 1, flags, opts, make([]byte, payload), true)
	binary.BigEndian.PutUint16(p[20:], port)
	binary.BigEndian.PutUint32(p[28:], ack)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	pkt.NetworkHeader().Consume(20)
	pkt.TransportHeader().Consume(20 + len(opts))
	return pkt
}

// sent describes a packet that left the endpoint.
type sent struct {
	flags byte
	port  uint16
	ack   uint32
}

// writeOne hands pkt to the endpoint and drops the caller's reference.
func writeOne(t *testing.T, e *linkEndpoint, pkt *stack.PacketBuffer) {
	t.Helper()
	writeKeep(t, e, pkt)
	pkt.DecRef()
}

func (e *linkEndpoint) drainQueue() []sent {
	var out []sent
	for pkt := e.pop(); pkt != nil; pkt = e.pop() {
		tcp := header.TCP(pkt.TransportHeader().Slice())
		out = append(out, sent{byte(tcp.Flags()), tcp.SourcePort(), tcp.AckNumber()})
		pkt.DecRef()
	}
	return out
}

// TestACKHoldRules feeds the endpoint sequences of segments and checks
// which go out, in which order, before the hold time passes.
func TestACKHoldRules(t *testing.T) {
	const (
		ack  = byte(header.TCPFlagAck)
		data = byte(header.TCPFlagAck | header.TCPFlagPsh)
		rst  = byte(header.TCPFlagRst | header.TCPFlagAck)
		fin  = byte(header.TCPFlagFin | header.TCPFlagAck)
		syn  = byte(header.TCPFlagSyn)
	)
	type seg struct {
		flags   byte
		port    uint16
		ack     uint32
		opts    []byte
		payload int
	}
	tests := []struct {
		name string
		segs []seg
		want []sent // before the hold time ends
	}{
		{"reply carries the ACK", []seg{{data, 1, 100, optTimestamps, 10}, {ack, 1, 101, optTimestamps, 0}, {data, 1, 101, optTimestamps, 10}},
			[]sent{{data, 1, 100}, {data, 1, 101}}},
		{"FIN carries the ACK", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, nil, 0}, {fin, 1, 101, nil, 0}},
			[]sent{{data, 1, 100}, {fin, 1, 101}}},
		{"newer ACK replaces the held one", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, nil, 0}, {ack, 1, 102, nil, 0}},
			[]sent{{data, 1, 100}}},
		{"duplicate ACK: both go out", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, nil, 0}, {ack, 1, 101, nil, 0}},
			[]sent{{data, 1, 100}, {ack, 1, 101}, {ack, 1, 101}}},
		{"ACK of an MTU or more goes out", []seg{{data, 1, 100, nil, 10}, {ack, 1, 100 + 1420, nil, 0}},
			[]sent{{data, 1, 100}, {ack, 1, 1520}}},
		{"ACK with SACK blocks goes out", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, optSACK, 0}},
			[]sent{{data, 1, 100}, {ack, 1, 101}}},
		{"RST follows the held ACK", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, nil, 0}, {rst, 1, 101, nil, 0}},
			[]sent{{data, 1, 100}, {ack, 1, 101}, {rst, 1, 101}}},
		{"other connection: held ACK first", []seg{{data, 1, 100, nil, 10}, {ack, 1, 101, nil, 0}, {data, 2, 7, nil, 10}},
			[]sent{{data, 1, 100}, {ack, 1, 101}, {data, 2, 7}}},
		{"handshake ACK goes out", []seg{{syn, 1, 0, nil, 0}, {ack, 1, 101, nil, 0}},
			[]sent{{syn, 1, 0}, {ack, 1, 101}}},
		{"first segment of a connection goes out", []seg{{ack, 3, 101, nil, 0}},
			[]sent{{ack, 3, 101}}},
		{"receiver of a stream: no ACK waits", []seg{{data, 1, 100, nil, 10}, {ack, 1, 2000, nil, 0}, {ack, 1, 2001, nil, 0}, {ack, 1, 2002, nil, 0}},
			[]sent{{data, 1, 100}, {ack, 1, 2000}, {ack, 1, 2001}, {ack, 1, 2002}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newLinkEndpoint(1420)
			e.ack.wait = time.Hour
			defer e.Close()
			for _, s := range tt.segs {
				writeOne(t, e, outbound(s.flags, s.port, s.ack, s.opts, s.payload))
			}
			got := e.drainQueue()
			if !slices.Equal(got, tt.want) {
				t.Fatalf("sent %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHeldACKExpires checks that a Read waiting for packets gets the held
// ACK once the hold time is over.
func TestHeldACKExpires(t *testing.T) {
	e := newLinkEndpoint(1420)
	defer e.Close()
	writeOne(t, e, outbound(byte(header.TCPFlagAck|header.TCPFlagPsh), 1, 100, nil, 10))
	writeOne(t, e, outbound(byte(header.TCPFlagAck), 1, 101, nil, 0))
	// Read until the ACK comes out: with no reply to carry it, the
	// endpoint sends it when the hold time is over.
	got := make(chan []sent, 1)
	go func() {
		var out []sent
		bufs, sizes := newBufs(4), make([]int, 4)
		for len(out) < 2 {
			n, err := e.read(bufs, sizes, 0)
			if err != nil {
				break
			}
			for i := range n {
				p := bufs[i][:sizes[i]]
				out = append(out, sent{tcpFlags(p), binary.BigEndian.Uint16(p[20:]), binary.BigEndian.Uint32(p[28:])})
			}
		}
		got <- out
	}()
	select {
	case out := <-got:
		want := []sent{{byte(header.TCPFlagAck | header.TCPFlagPsh), 1, 100}, {byte(header.TCPFlagAck), 1, 101}}
		if !slices.Equal(out, want) {
			t.Fatalf("read %v, want %v", out, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held ACK not sent within 5 s")
	}
}

// TestCloseReleasesHeldACK checks that Close lets go of a held ACK.
func TestCloseReleasesHeldACK(t *testing.T) {
	e := newLinkEndpoint(1420)
	e.ack.wait = time.Hour
	writeOne(t, e, outbound(byte(header.TCPFlagAck|header.TCPFlagPsh), 1, 100, nil, 10))
	pkt := outbound(byte(header.TCPFlagAck), 1, 101, nil, 0)
	writeKeep(t, e, pkt)
	if got := pkt.ReadRefs(); got != 2 {
		t.Fatalf("refs while held = %d, want 2 (ours and the endpoint's)", got)
	}
	e.Close()
	if got := pkt.ReadRefs(); got != 1 {
		t.Fatalf("refs after Close = %d, want 1", got)
	}
	pkt.DecRef()
}

// BenchmarkACKHold compares the endpoint with and without delayed ACKs on
// a 1-byte ping-pong (the figure is ns per round trip) and on a stream
// (MB/s). WGMESH_BENCH_DELAY and WGMESH_BENCH_LOSS put a long, lossy path
// between the stacks.
func BenchmarkACKHold(b *testing.B) {
	for _, hold := range []time.Duration{ackHoldTime, 0} {
		name := "hold"
		if hold == 0 {
			name = "nohold"
		}
		run := func(b *testing.B, body func(b *testing.B, client, server net.Conn)) {
			saved := ackHoldTime
			ackHoldTime = hold
			defer func() { ackHoldTime = saved }()
			p := newWGPair(b, false)
			client, server := p.stream(b)
			body(b, client, server)
		}
		b.Run("pingpong/"+name, func(b *testing.B) {
			run(b, func(b *testing.B, client, server net.Conn) {
				go func() { _, _ = io.Copy(server, server) }()
				buf := make([]byte, 1)
				b.ResetTimer()
				for range b.N {
					if _, err := client.Write(buf); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(client, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
		b.Run("stream/"+name, func(b *testing.B) {
			run(b, func(b *testing.B, client, server net.Conn) {
				benchStream(b, client, server)
			})
		})
	}
}
