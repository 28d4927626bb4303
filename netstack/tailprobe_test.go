package netstack

import (
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// tsOption is NOP NOP and a timestamps option with val and ecr.
func tsOption(val, ecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], val)
	binary.BigEndian.PutUint32(o[8:], ecr)
	return o
}

// outboundFlow is the flow key of tcpPacket's packets (10.99.0.1:40000 to
// 10.99.0.2:5201, or fd99::1 to fd99::2), as parseSegment names it.
func outboundFlow(v6 bool) tcpFlow {
	p := tcpPacket(v6, 0, tcpFlagACK, nil, nil, true)
	var f tcpFlow
	if v6 {
		copy(f.addrs[:], p[8:40])
		f.v6 = true
	} else {
		copy(f.addrs[:8], p[12:20])
	}
	ip, _ := tcpIPHeaderLen(p)
	f.ports = binary.BigEndian.Uint32(p[ip:])
	return f
}

// inboundACK is an ACK from the far end of outboundFlow: addresses and
// ports swapped, acknowledging ack, with options opts and payload.
func inboundACK(v6 bool, ack uint32, opts, payload []byte) []byte {
	p := tcpPacket(v6, 777, tcpFlagACK, opts, payload, true)
	ipLen, _ := tcpIPHeaderLen(p)
	if v6 {
		var src [16]byte
		copy(src[:], p[8:24])
		copy(p[8:24], p[24:40])
		copy(p[24:40], src[:])
	} else {
		var src [4]byte
		copy(src[:], p[12:16])
		copy(p[12:16], p[16:20])
		copy(p[16:20], src[:])
	}
	tcp := p[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], 5201)
	binary.BigEndian.PutUint16(tcp[2:], 40000)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	fixChecksums(p, ipLen)
	return p
}

// TestTailProbeDSACK follows one connection through a retransmission and
// checks which ACK gets a D-SACK block, and that the rewritten packet is
// well formed and reads as gVisor's sender will read it.
func TestTailProbeDSACK(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		flow := outboundFlow(v6)
		// Two segments, [1000, 3000), sent at TSval 100; then [2000, 3000)
		// again at TSval 103: a tail loss probe.
		setup := func() *tailProbes {
			var tp tailProbes
			tp.sent(flow, header.TCPFlagAck, 1000, 1000, tsOption(100, 0))
			tp.sent(flow, header.TCPFlagAck, 2000, 1000, tsOption(100, 0))
			tp.sent(flow, header.TCPFlagAck, 2000, 1000, tsOption(103, 0))
			if tp.waiting.Load() != 1 {
				t.Fatalf("waiting = %d after a retransmission, want 1", tp.waiting.Load())
			}
			return &tp
		}

		// The ACK for the original segments, echoing their timestamp.
		tp := setup()
		payload := []byte("reply data")
		in := inboundACK(v6, 3000, tsOption(555, 100), payload)
		out := tp.received(in)
		if out == nil {
			t.Fatalf("v6=%v: ACK echoing the original's timestamp got no D-SACK", v6)
		}
		tcp, gotPayload := checkPacket(t, out)
		if string(gotPayload) != string(payload) {
			t.Fatalf("payload %q, want %q", gotPayload, payload)
		}
		opts := header.ParseTCPOptions(tcp[20:])
		if !opts.TS || opts.TSVal != 555 || opts.TSEcr != 100 {
			t.Fatalf("timestamps lost: %+v", opts)
		}
		want := header.SACKBlock{Start: seqnum.Value(2000), End: seqnum.Value(3000)}
		if len(opts.SACKBlocks) != 1 || opts.SACKBlocks[0] != want {
			t.Fatalf("SACK blocks %v, want [%v]", opts.SACKBlocks, want)
		}
		if binary.BigEndian.Uint32(tcp[8:]) != 3000 {
			t.Fatalf("ACK number changed")
		}
		if tp.waiting.Load() != 0 || tp.fixed.Load() != 1 {
			t.Fatalf("waiting %d fixed %d after the episode, want 0 and 1", tp.waiting.Load(), tp.fixed.Load())
		}
		// The episode is over: the next ACK passes unchanged.
		if tp.received(inboundACK(v6, 3000, tsOption(556, 100), nil)) != nil {
			t.Fatalf("a second ACK got a D-SACK")
		}

		for _, c := range []struct {
			name    string
			pkt     []byte
			waiting int32 // after the packet
		}{
			// The probe repaired a loss: the ACK echoes its timestamp.
			{"echoes the retransmission", inboundACK(v6, 3000, tsOption(555, 103), nil), 0},
			// Not yet past what had been sent: keep waiting.
			{"short of the highest sequence", inboundACK(v6, 2500, tsOption(555, 100), nil), 1},
			// SACK blocks mean the receiver reports a hole: leave it alone.
			{"carries SACK blocks", inboundACK(v6, 3000, append(tsOption(555, 100), optSACK...), nil), 0},
			// Without timestamps nothing can be told.
			{"no timestamps", inboundACK(v6, 3000, nil, nil), 0},
			// Options already 40 bytes long: no room for the block.
			{"no room", inboundACK(v6, 3000, append(tsOption(555, 100), make([]byte, 28)...), nil), 0},
		} {
			tp := setup()
			if out := tp.received(c.pkt); out != nil {
				t.Errorf("v6=%v %s: got a D-SACK", v6, c.name)
			}
			if tp.waiting.Load() != c.waiting {
				t.Errorf("v6=%v %s: waiting %d, want %d", v6, c.name, tp.waiting.Load(), c.waiting)
			}
		}

		// A second retransmission before any ACK: an ACK echoing the first
		// one's timestamp shows that the first repaired a loss.
		tp = setup()
		tp.sent(flow, header.TCPFlagAck, 2000, 1000, tsOption(310, 0))
		if tp.received(inboundACK(v6, 3000, tsOption(555, 103), nil)) != nil {
			t.Errorf("v6=%v: ACK echoing the first of two retransmissions got a D-SACK", v6)
		}
		if tp.waiting.Load() != 0 {
			t.Errorf("v6=%v: waiting %d after the episode, want 0", v6, tp.waiting.Load())
		}

		// Another connection's ACK does not end this one's episode.
		tp = setup()
		other := inboundACK(v6, 3000, tsOption(555, 100), nil)
		ipLen, _ := tcpIPHeaderLen(other)
		binary.BigEndian.PutUint16(other[ipLen:], 5202)
		fixChecksums(other, ipLen)
		if tp.received(other) != nil || tp.waiting.Load() != 1 {
			t.Fatalf("v6=%v: another connection's ACK was taken for this one's", v6)
		}
		// A FIN forgets the connection.
		tp.sent(flow, header.TCPFlagAck|header.TCPFlagFin, 3000, 0, tsOption(104, 0))
		if tp.waiting.Load() != 0 || tp.received(inboundACK(v6, 3000, tsOption(555, 100), nil)) != nil {
			t.Fatalf("v6=%v: a closed connection still matched", v6)
		}
	}
}

// TestTailProbeBound checks that following many connections stays bounded
// and keeps the waiting count right.
func TestTailProbeBound(t *testing.T) {
	var tp tailProbes
	flow := outboundFlow(false)
	for i := range maxTailFlows + 100 {
		f := flow
		f.ports = uint32(i)
		tp.sent(f, header.TCPFlagAck, 0, 10, tsOption(1, 0))
		tp.sent(f, header.TCPFlagAck, 0, 10, tsOption(2, 0)) // a retransmission
	}
	if len(tp.flows) > maxTailFlows {
		t.Fatalf("%d connections followed, bound %d", len(tp.flows), maxTailFlows)
	}
	if int(tp.waiting.Load()) != len(tp.flows) {
		t.Fatalf("waiting %d, %d connections with a retransmission", tp.waiting.Load(), len(tp.flows))
	}
}

// stallDevice passes packets to the stack, except that the Write after
// each stall request first waits stall: the ACK stream to a sender pauses,
// as it does when a busy machine does not schedule the reader in time.
type stallDevice struct {
	*Stack
	stall   time.Duration
	pending atomic.Bool
}

func (d *stallDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.pending.Swap(false) {
		time.Sleep(d.stall)
	}
	return d.Stack.Write(bufs, offset)
}

// TestSpuriousTailProbe stalls the ACKs to a sending stack so that its
// tail loss probe fires with nothing lost. gVisor on its own then counts a
// loss and enters recovery (halving its window) for every stall; with the
// endpoint's D-SACK it must not.
func TestSpuriousTailProbe(t *testing.T) {
	const stalls = 8
	run := func(fix bool) (recoveries, dsacks uint64) {
		saved := fixTailProbes
		fixTailProbes = fix
		defer func() { fixTailProbes = saved }()
		var sender *stallDevice
		p := newWGPairWith(t, false, func(s *Stack) tun.Device {
			d := &stallDevice{Stack: s, stall: 20 * time.Millisecond}
			if sender == nil {
				sender = d // a: the end that dials sends
			}
			return d
		})
		// A first, refused connection completes WireGuard's handshake,
		// so that the stream's SRTT starts from the path's round trip.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if c, err := p.a.DialTCP(ctx, netip.AddrPortFrom(p.addrB, 9)); err == nil {
			c.Close()
		}
		cancel()
		client, server := p.stream(t)
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, server)
			done <- err
		}()
		// Bursts, the first ACK of each stalled: the probe fires while
		// the burst is in flight, and the ACKs show nothing was lost.
		burst := make([]byte, 256<<10)
		for range stalls {
			sender.pending.Store(true)
			if _, err := client.Write(burst); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		client.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		st := p.a.TCPStats()
		if st.SpuriousProbes != p.a.ep.tail.fixed.Load() || st.Recoveries < p.a.stack.Stats().TCP.SACKRecovery.Value() || st.Retransmits < st.SpuriousProbes {
			t.Errorf("TCPStats %+v disagree with the stack's counters", st)
		}
		return p.a.stack.Stats().TCP.SACKRecovery.Value(), p.a.ep.tail.fixed.Load()
	}
	recoveries, _ := run(false)
	if recoveries == 0 {
		t.Fatalf("without the D-SACK, %d stalls caused no recovery: the test no longer provokes a spurious probe", stalls)
	}
	fixed, dsacks := run(true)
	t.Logf("recoveries without the D-SACK %d, with it %d (%d D-SACKs added)", recoveries, fixed, dsacks)
	if dsacks == 0 || fixed*2 > recoveries {
		t.Fatalf("with the D-SACK: %d recoveries and %d D-SACKs; without it %d recoveries", fixed, dsacks, recoveries)
	}
}

// dropDevice passes packets to the stack, except the first TCP data
// segment after each drop request.
type dropDevice struct {
	*Stack
	pending atomic.Bool
}

func (d *dropDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.pending.Load() {
		for i, b := range bufs {
			p := b[offset:]
			if ipLen, tcpLen, _, ok := groCandidate(p); ok && len(p) > ipLen+tcpLen && d.pending.Swap(false) {
				n, err := d.Stack.Write(append(bufs[:i:i], bufs[i+1:]...), offset)
				if err == nil {
					n = len(bufs)
				}
				return n, err
			}
		}
	}
	return d.Stack.Write(bufs, offset)
}

// TestTailProbeRealLoss drops the only segment of a small write, so that
// the tail loss probe repairs a loss that did happen: the ACK then echoes
// the probe's timestamp, no D-SACK may be added, and gVisor must count
// the loss as it does without the endpoint.
func TestTailProbeRealLoss(t *testing.T) {
	const drops = 4
	var receiver *dropDevice
	first := true
	p := newWGPairWith(t, false, func(s *Stack) tun.Device {
		d := &dropDevice{Stack: s}
		if !first {
			receiver = d // b
		}
		first = false
		return d
	})
	client, server := p.stream(t)
	// A bulk transfer first, for an SRTT near the path's. Write returns
	// once the data is in the send buffer; the drops must wait until all of
	// it has arrived, or one could hit a bulk segment, and a repair of the
	// bulk would land between before and after.
	const bulk = 8 << 20
	delivered := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(server, make([]byte, bulk))
		delivered <- err
		_, _ = io.Copy(io.Discard, server)
	}()
	if _, err := client.Write(make([]byte, bulk)); err != nil {
		t.Fatal(err)
	}
	if err := <-delivered; err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // for the last ACK
	before := p.a.TCPStats()
	for range drops {
		receiver.pending.Store(true)
		if _, err := client.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		// A probe for one segment waits 2 x SRTT plus 200 ms.
		time.Sleep(400 * time.Millisecond)
		if receiver.pending.Load() {
			t.Fatal("the segment to drop never came")
		}
	}
	after := p.a.TCPStats()
	t.Logf("before %+v, after %+v", before, after)
	if got := after.SpuriousProbes - before.SpuriousProbes; got != 0 {
		t.Errorf("%d D-SACKs added for probes that repaired real losses", got)
	}
	if got := after.Recoveries - before.Recoveries; got < drops {
		t.Errorf("%d recoveries for %d lost segments", got, drops)
	}
	if got := after.Retransmits - before.Retransmits; got < drops {
		t.Errorf("%d retransmissions for %d lost segments", got, drops)
	}
}
