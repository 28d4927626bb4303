package netstack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// rfc1071 is a plain Internet checksum over the concatenation of parts,
// written from RFC 1071 and independent of the optimized one the endpoint
// uses.
func rfc1071(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	var sum uint32
	for i := 0; i+1 < len(all); i += 2 {
		sum += uint32(all[i])<<8 | uint32(all[i+1])
	}
	if len(all)%2 == 1 {
		sum += uint32(all[len(all)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checkPacket verifies a TCP/IP packet's lengths and checksums with
// rfc1071 and returns its TCP header and payload.
func checkPacket(t testing.TB, p []byte) (tcp, payload []byte) {
	t.Helper()
	if len(p) < 1 {
		t.Fatalf("empty packet")
	}
	var ip []byte
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("IPv4 total length %d, packet %d bytes", binary.BigEndian.Uint16(p[2:]), len(p))
		}
		ip = p[:ihl]
		if rfc1071(ip) != 0 {
			t.Fatalf("bad IPv4 header checksum")
		}
	case 6:
		if len(p) < 40 || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			t.Fatalf("IPv6 payload length %d, packet %d bytes", binary.BigEndian.Uint16(p[4:]), len(p))
		}
		ip = p[:40]
	default:
		t.Fatalf("IP version %d", p[0]>>4)
	}
	seg := p[len(ip):]
	if rfc1071(pseudo(ip, len(seg)), seg) != 0 {
		t.Fatalf("bad TCP checksum")
	}
	off := int(seg[12]>>4) * 4
	return seg[:off], seg[off:]
}

// pseudo is the TCP pseudo-header of a segment of n bytes in packet ip.
func pseudo(ip []byte, n int) []byte {
	var b []byte
	if ip[0]>>4 == 4 {
		b = append(b, ip[12:20]...)
		b = append(b, 0, protoTCP)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	} else {
		b = append(b, ip[8:40]...)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = append(b, 0, 0, 0, protoTCP)
	}
	return b
}

// tcpPacket builds a TCP/IP packet. With valid it carries correct
// checksums; otherwise the TCP checksum holds gVisor's GSO placeholder
// (the pseudo-header sum) and the IPv4 header checksum is zero.
func tcpPacket(v6 bool, seq uint32, flags byte, opts, payload []byte, valid bool) []byte {
	var p []byte
	tcpLen := 20 + len(opts)
	if !v6 {
		p = make([]byte, 20, 20+tcpLen+len(payload))
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(min(20+tcpLen+len(payload), 0xffff)))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		p[6] = 0x40 // DF
		p[8] = 64
		p[9] = protoTCP
		copy(p[12:], []byte{10, 99, 0, 1, 10, 99, 0, 2})
	} else {
		p = make([]byte, 40, 40+tcpLen+len(payload))
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(min(tcpLen+len(payload), 0xffff)))
		p[6] = protoTCP
		p[7] = 64
		p[8], p[9], p[23] = 0xfd, 0x99, 1
		p[24], p[25], p[39] = 0xfd, 0x99, 2
	}
	ipLen := len(p)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 0xabcdef01)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	p = append(p, tcp...)
	p = append(p, opts...)
	p = append(p, payload...)
	ip, seg := p[:ipLen], p[ipLen:]
	if valid {
		if !v6 {
			binary.BigEndian.PutUint16(ip[10:], rfc1071(ip))
		}
		binary.BigEndian.PutUint16(seg[16:], rfc1071(pseudo(ip, len(seg)), seg))
	} else {
		binary.BigEndian.PutUint16(seg[16:], ^rfc1071(pseudo(ip, len(seg))))
	}
	return p
}

// Options as gVisor sends them: NOP NOP timestamps, and a SACK block.
var (
	optTimestamps = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}
	optSACK       = []byte{1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0}
)

func newBufs(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 0xffff)
	}
	return bufs
}

// split runs gsoSplit over a super-segment in two-slice form, a few
// buffers at a time, as the endpoint does when a batch fills up.
func split(t testing.TB, super []byte, mss, batch, cut int) [][]byte {
	t.Helper()
	cut = min(cut, len(super))
	pkt := [][]byte{super[:cut], super[cut:]}
	var out [][]byte
	bufs := newBufs(batch)
	sizes := make([]int, batch)
	const offset = 16
	for first := 0; first < 1<<16; {
		n, done, err := gsoSplit(pkt, len(super), mss, first, bufs, sizes, offset)
		if err != nil {
			t.Fatalf("gsoSplit: %v", err)
		}
		for i := range n {
			out = append(out, slices.Clone(bufs[i][offset:offset+sizes[i]]))
		}
		first += n
		if done {
			return out
		}
	}
	t.Fatal("gsoSplit never finished")
	return nil
}

func coalesce(pkts [][]byte) (out [][]byte, merged []bool) {
	var tbl groTable
	tbl.coalesce(pkts, func(n int) []byte { return make([]byte, n) }, func(p []byte, c bool) {
		out = append(out, slices.Clone(p))
		merged = append(merged, c)
	})
	return out, merged
}

// TestGSOGRORoundTrip cuts byte streams into segments and coalesces them
// again, for both IP versions, MSS edge cases and TCP options.
func TestGSOGRORoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const mss = 1380
	lengths := []int{1, mss - 1, mss, mss + 1, 2 * mss, 2*mss + 1, 47 * mss, 65000, 65535 - 40 - 60 - 20}
	for range 20 {
		lengths = append(lengths, 1+rng.IntN(65000))
	}
	for _, v6 := range []bool{false, true} {
		for _, opts := range [][]byte{nil, optTimestamps, append(slices.Clone(optTimestamps), optSACK...)} {
			for _, n := range lengths {
				for _, flags := range []byte{tcpFlagACK | tcpFlagPSH, tcpFlagACK | tcpFlagPSH | tcpFlagFIN, tcpFlagACK | tcpFlagCWR} {
					name := fmt.Sprintf("v6=%v/opts=%d/len=%d/flags=%#x", v6, len(opts), n, flags)
					t.Run(name, func(t *testing.T) {
						roundTrip(t, rng, v6, opts, n, mss, flags)
					})
				}
			}
		}
	}
}

func roundTrip(t *testing.T, rng *rand.Rand, v6 bool, opts []byte, n, mss int, flags byte) {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	if len(payload)+60+len(opts)+20 > 0xffff {
		t.Skip("too large for one IP packet")
	}
	const seq0 = 0xfffff000 // wraps within the stream
	super := tcpPacket(v6, seq0, flags, opts, payload, false)
	segs := split(t, super, mss, 1+rng.IntN(8), rng.IntN(200))
	want := gsoSegments(n, mss)
	if len(segs) != want {
		t.Fatalf("%d segments, want %d", len(segs), want)
	}
	var got []byte
	for i, s := range segs {
		tcp, pl := checkPacket(t, s)
		if i < len(segs)-1 && len(pl) != mss {
			t.Fatalf("segment %d carries %d bytes, want %d", i, len(pl), mss)
		}
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != seq0+uint32(len(got)) {
			t.Fatalf("segment %d seq %#x, want %#x", i, seq, seq0+uint32(len(got)))
		}
		if !bytes.Equal(tcp[20:], opts) {
			t.Fatalf("segment %d options %x, want %x", i, tcp[20:], opts)
		}
		f := tcp[13]
		last := i == len(segs)-1
		if (f&(tcpFlagFIN|tcpFlagPSH) != 0) != (last && flags&(tcpFlagFIN|tcpFlagPSH) != 0) {
			t.Fatalf("segment %d of %d flags %#x from %#x", i, len(segs), f, flags)
		}
		if (f&tcpFlagCWR != 0) != (i == 0 && flags&tcpFlagCWR != 0) {
			t.Fatalf("segment %d flags %#x from %#x: CWR only on the first", i, f, flags)
		}
		if !v6 {
			if id := binary.BigEndian.Uint16(s[4:]); id != 0x1234+uint16(i) {
				t.Fatalf("segment %d IPv4 ID %#x", i, id)
			}
		}
		got = append(got, pl...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("segments do not carry the stream")
	}

	out, merged := coalesce(segs)
	got = got[:0]
	for i, p := range out {
		if !merged[i] && !slices.ContainsFunc(segs, func(s []byte) bool { return bytes.Equal(s, p) }) {
			t.Fatalf("packet %d changed but not reported as coalesced", i)
		}
		tcp, pl := checkPacket(t, p)
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != seq0+uint32(len(got)) {
			t.Fatalf("coalesced packet %d seq %#x, want %#x", i, seq, seq0+uint32(len(got)))
		}
		if !bytes.Equal(tcp[20:], opts) {
			t.Fatalf("coalesced packet %d options %x, want %x", i, tcp[20:], opts)
		}
		got = append(got, pl...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("coalesced packets do not carry the stream")
	}
	// A FIN or CWR segment stays apart; everything else becomes one.
	wantOut := 1
	if flags&tcpFlagFIN != 0 && len(segs) > 1 {
		wantOut = 2
	}
	if flags&tcpFlagCWR != 0 {
		wantOut = min(len(segs), 2)
	}
	if len(out) != wantOut {
		t.Fatalf("%d segments coalesced into %d packets, want %d", len(segs), len(out), wantOut)
	}
}

// TestGROKeepsApart checks what must not coalesce: other flows, gaps,
// different options or acks, a PSH in the middle, and that order holds.
func TestGROKeepsApart(t *testing.T) {
	pl := bytes.Repeat([]byte{7}, 100)
	a := func(seq uint32, flags byte, opts []byte) []byte {
		return tcpPacket(false, seq, flags, opts, pl, true)
	}
	otherFlow := a(100, tcpFlagACK, nil)
	otherFlow[19] = 3 // another destination
	binary.BigEndian.PutUint16(otherFlow[10:], 0)
	binary.BigEndian.PutUint16(otherFlow[10:], rfc1071(otherFlow[:20]))
	seg := otherFlow[20:]
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], rfc1071(pseudo(otherFlow[:20], len(seg)), seg))
	otherOpts := slices.Clone(optTimestamps)
	otherOpts[7]++
	for _, tc := range []struct {
		name string
		in   [][]byte
		want int
	}{
		{"contiguous", [][]byte{a(0, tcpFlagACK, nil), a(100, tcpFlagACK, nil), a(200, tcpFlagACK|tcpFlagPSH, nil)}, 1},
		{"gap", [][]byte{a(0, tcpFlagACK, nil), a(200, tcpFlagACK, nil)}, 2},
		{"overlap", [][]byte{a(0, tcpFlagACK, nil), a(50, tcpFlagACK, nil)}, 2},
		{"reordered", [][]byte{a(100, tcpFlagACK, nil), a(0, tcpFlagACK, nil)}, 2},
		{"psh in the middle", [][]byte{a(0, tcpFlagACK|tcpFlagPSH, nil), a(100, tcpFlagACK, nil)}, 2},
		{"other flow between", [][]byte{a(0, tcpFlagACK, nil), otherFlow, a(100, tcpFlagACK, nil)}, 2},
		{"timestamps differ", [][]byte{a(0, tcpFlagACK, optTimestamps), a(100, tcpFlagACK, otherOpts)}, 2},
		{"timestamps same", [][]byte{a(0, tcpFlagACK, optTimestamps), a(100, tcpFlagACK, optTimestamps)}, 1},
		{"syn", [][]byte{a(0, tcpFlagSYN|tcpFlagACK, nil), a(100, tcpFlagACK, nil)}, 2},
		{"fin first", [][]byte{a(0, tcpFlagFIN|tcpFlagACK, nil), a(100, tcpFlagACK, nil)}, 2},
		{"rst", [][]byte{a(0, tcpFlagACK, nil), a(100, tcpFlagRST|tcpFlagACK, nil)}, 2},
		{"urg", [][]byte{a(0, tcpFlagACK, nil), a(100, tcpFlagURG|tcpFlagACK, nil)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := coalesce(tc.in)
			if len(out) != tc.want {
				t.Fatalf("%d packets out, want %d", len(out), tc.want)
			}
			for _, p := range out {
				checkPacket(t, p)
			}
		})
	}
	// An ack that differs, and the 64 KiB bound.
	ack := a(100, tcpFlagACK, nil)
	ack[20+8]++
	binary.BigEndian.PutUint16(ack[20+16:], 0)
	binary.BigEndian.PutUint16(ack[20+16:], rfc1071(pseudo(ack[:20], len(ack)-20), ack[20:]))
	if out, _ := coalesce([][]byte{a(0, tcpFlagACK, nil), ack}); len(out) != 2 {
		t.Fatalf("segments with different acks coalesced")
	}
	big := make([][]byte, 0, 60)
	for i := range 60 {
		big = append(big, tcpPacket(true, uint32(i*1400), tcpFlagACK, nil, make([]byte, 1400), true))
	}
	out, _ := coalesce(big)
	total := 0
	for _, p := range out {
		checkPacket(t, p)
		if len(p) > 0xffff {
			t.Fatalf("coalesced packet of %d bytes", len(p))
		}
		total += len(p) - 60
	}
	if len(out) != 2 || total != 60*1400 {
		t.Fatalf("60 segments of 1400 bytes became %d packets carrying %d bytes", len(out), total)
	}
}

// tcpPayloadLen is the TCP payload of p by its IP header, or -1.
func tcpPayloadLen(p []byte) int {
	ipLen, ok := tcpIPHeaderLen(p)
	if !ok || len(p) < ipLen+13 {
		return -1
	}
	var size int
	if p[0]>>4 == 4 {
		size = int(binary.BigEndian.Uint16(p[2:]))
	} else {
		size = 40 + int(binary.BigEndian.Uint16(p[4:]))
	}
	off := int(p[ipLen+12]>>4) * 4
	if size > len(p) || ipLen+off > size {
		return -1
	}
	return size - ipLen - off
}

func FuzzGSOSplit(f *testing.F) {
	f.Add(tcpPacket(false, 1, tcpFlagACK|tcpFlagPSH, optTimestamps, make([]byte, 3000), false), uint16(1380), uint8(0), uint8(3))
	f.Add(tcpPacket(true, 1, tcpFlagACK|tcpFlagFIN, optSACK, make([]byte, 1381), false), uint16(1380), uint8(1), uint8(1))
	f.Add(tcpPacket(false, 1, tcpFlagACK, nil, []byte{1}, false), uint16(1), uint8(0), uint8(0))
	f.Add([]byte{0x45, 0, 0, 20}, uint16(0), uint8(0), uint8(0))
	bufs := newBufs(4)
	sizes := make([]int, 4)
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16, first, cut uint8) {
		c := min(int(cut), len(pkt))
		n, _, err := gsoSplit([][]byte{pkt[:c], pkt[c:]}, len(pkt), int(mss), int(first), bufs, sizes, 16)
		if n > len(bufs) {
			t.Fatalf("%d packets into %d buffers", n, len(bufs))
		}
		for i := range n {
			checkPacket(t, bufs[i][16:16+sizes[i]])
		}
		if err == nil && n == 0 {
			// Parsed, so the headers are there; segments are counted over
			// the payload behind them, not the whole packet.
			ipLen, _ := tcpIPHeaderLen(pkt)
			payload := len(pkt) - ipLen - int(pkt[ipLen+12]>>4)*4
			if int(first) < gsoSegments(payload, max(int(mss), 1)) {
				t.Fatalf("no packet and no error")
			}
		}
	})
}

// FuzzGRO feeds batches of arbitrary packets (cut from data at the given
// lengths) and of valid segments mangled by the fuzzer: nothing panics,
// every coalesced packet is valid, untouched packets come out unchanged,
// and no TCP payload is lost or invented.
func FuzzGRO(f *testing.F) {
	var seed []byte
	for i := range 4 {
		seed = append(seed, tcpPacket(false, uint32(i*100), tcpFlagACK, optTimestamps, make([]byte, 100), true)...)
	}
	f.Add(seed, []byte{132, 132, 132, 132}, uint16(0))
	f.Add(seed, []byte{132, 1, 131, 132}, uint16(5))
	f.Add([]byte{0x60, 0, 0, 0}, []byte{4}, uint16(0))
	f.Fuzz(func(t *testing.T, data, lens []byte, flip uint16) {
		var pkts [][]byte
		for _, l := range lens {
			if len(pkts) == 128 {
				break
			}
			n := min(int(l)+1, len(data))
			pkts = append(pkts, slices.Clone(data[:n]))
			data = data[n:]
		}
		// Segments made valid so that they coalesce, then one
		// header byte flipped.
		for i, p := range pkts {
			if ipLen, tcpLen, size, ok := groCandidate(p); ok && ipLen+tcpLen <= size {
				fixChecksums(p[:size], ipLen)
				if int(flip)%64 == i && len(p) > 0 {
					p[int(flip/64)%len(p)] ^= 0x10
				}
			}
		}
		in := make([][]byte, len(pkts))
		for i, p := range pkts {
			in[i] = slices.Clone(p)
		}
		var tbl groTable
		var out [][]byte
		inSum, outSum := 0, 0
		tbl.coalesce(pkts, func(n int) []byte { return make([]byte, n) }, func(p []byte, merged bool) {
			if merged {
				checkPacket(t, p)
			} else if !slices.ContainsFunc(in, func(q []byte) bool { return bytes.Equal(p, q) }) {
				t.Fatalf("packet changed but not reported as coalesced")
			}
			out = append(out, p)
		})
		for _, p := range in {
			if n := tcpPayloadLen(p); n > 0 {
				inSum += n
			}
		}
		for _, p := range out {
			if n := tcpPayloadLen(p); n > 0 {
				outSum += n
			}
		}
		if inSum != outSum {
			t.Fatalf("TCP payload %d bytes in, %d out", inSum, outSum)
		}
		for i := range pkts {
			if !bytes.Equal(pkts[i], in[i]) {
				t.Fatalf("input packet %d modified", i)
			}
		}
	})
}

// fixChecksums makes the checksums of a TCP/IP packet valid.
func fixChecksums(p []byte, ipLen int) {
	if p[0]>>4 == 4 {
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], rfc1071(p[:ipLen]))
	}
	seg := p[ipLen:]
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], rfc1071(pseudo(p[:ipLen], len(seg)), seg))
}

// TestGROChecksumOddParts: the coalesced checksum is derived from the
// segments' own (payloadSum); parts of odd length move the ones after
// them to odd offsets, where their sums must be taken byte-swapped.
// checkPacket recomputes the checksum over every byte.
func TestGROChecksumOddParts(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, sizes := range [][]int{
			{1001, 999, 1, 1400, 3},
			{1, 1, 1, 1},
			{1399, 1400, 1400, 1399, 2},
			{2, 3, 5, 7, 11, 13},
		} {
			t.Run(fmt.Sprintf("v6=%v/%v", v6, sizes), func(t *testing.T) {
				var in [][]byte
				var want []byte
				seq := uint32(1000)
				for i, n := range sizes {
					pl := make([]byte, n)
					for j := range pl {
						pl[j] = byte(i*31 + j*7 + 1)
					}
					want = append(want, pl...)
					in = append(in, tcpPacket(v6, seq, tcpFlagACK, optTimestamps, pl, true))
					seq += uint32(n)
				}
				out, merged := coalesce(in)
				if len(out) != 1 || !merged[0] {
					t.Fatalf("%d packets out, want one coalesced", len(out))
				}
				_, got := checkPacket(t, out[0])
				if !bytes.Equal(got, want) {
					t.Fatal("payload differs")
				}
			})
		}
	}
}

// BenchmarkGROBuild: coalescing one batch of a bulk stream, 45 segments of
// 1,400 bytes into one packet (copy and checksum), per byte received.
//
//	go test ./netstack -run XXX -bench GROBuild -count 6
func BenchmarkGROBuild(b *testing.B) {
	var in [][]byte
	for i := range 45 {
		in = append(in, tcpPacket(false, uint32(i*1400), tcpFlagACK, optTimestamps, make([]byte, 1400), true))
	}
	var t groTable
	dst := make([]byte, 1<<16)
	b.SetBytes(45 * 1400)
	for range b.N {
		t.coalesce(in, func(int) []byte { return dst }, func([]byte, bool) {})
	}
}
