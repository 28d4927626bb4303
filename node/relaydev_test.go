package node

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// ipv4Checksum is RFC 1071 over a header, computed from scratch.
func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		if i == 10 {
			continue
		}
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func TestDecrementTTLKeepsChecksumValid(t *testing.T) {
	for _, ttl := range []byte{2, 3, 64, 128, 255} {
		for _, seed := range []uint16{0, 1, 0x00ff, 0xfeff, 0xff00, 0xfffe} {
			h := make([]byte, 20)
			h[0] = 0x45
			h[8] = ttl
			h[9] = 6
			binary.BigEndian.PutUint16(h[2:], 60)
			binary.BigEndian.PutUint16(h[4:], seed)
			copy(h[12:], []byte{10, 42, 0, 1, 10, 42, 0, 2})
			binary.BigEndian.PutUint16(h[10:], ipv4Checksum(h))
			if !decrementTTL(h) {
				t.Fatalf("ttl %d dropped", ttl)
			}
			if h[8] != ttl-1 {
				t.Fatalf("ttl %d -> %d", ttl, h[8])
			}
			got, want := binary.BigEndian.Uint16(h[10:]), ipv4Checksum(h)
			// 0x0000 and 0xffff are both zero in one's complement.
			if got != want && !(got^want == 0xffff && (got == 0 || want == 0)) {
				t.Errorf("ttl %d seed %#x: checksum %#04x, want %#04x", ttl, seed, got, want)
			}
		}
	}
	h := make([]byte, 20)
	h[0], h[8] = 0x45, 1
	if decrementTTL(h) {
		t.Error("ttl 1 was forwarded")
	}
	h6 := make([]byte, 40)
	h6[0], h6[7] = 0x60, 64
	if !decrementTTL(h6) || h6[7] != 63 {
		t.Error("hop limit not decremented")
	}
}

// fakeTUN records what the relay passes to the host side.
type fakeTUN struct {
	written [][]byte
	reads   chan []byte
}

func (f *fakeTUN) File() *os.File           { return nil }
func (f *fakeTUN) MTU() (int, error)        { return 1420, nil }
func (f *fakeTUN) Name() (string, error)    { return "fake", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return nil }
func (f *fakeTUN) BatchSize() int           { return 4 }
func (f *fakeTUN) Close() error             { close(f.reads); return nil }
func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.written = append(f.written, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}
func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	p, ok := <-f.reads
	if !ok {
		return 0, os.ErrClosed
	}
	sizes[0] = copy(bufs[0][offset:], p)
	return 1, nil
}

func ipv4Packet(src, dst string, ttl byte) []byte {
	h := make([]byte, 28)
	h[0], h[8], h[9] = 0x45, ttl, 17
	binary.BigEndian.PutUint16(h[2:], 28)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], ipv4Checksum(h[:20]))
	return h
}

// TestRelayForwardsOnlyToMembers: a decrypted packet for another member
// goes back out; one for this node or for a non-member address goes to
// the host side, never back into the mesh; an expiring TTL is dropped.
func TestRelayForwardsOnlyToMembers(t *testing.T) {
	f := &fakeTUN{reads: make(chan []byte)}
	r := newRelayDevice(f)
	r.setMembers([]netip.Prefix{netip.MustParsePrefix("10.42.0.2/32"), netip.MustParsePrefix("192.168.1.0/24")})
	const off = 16
	batch := func(pkts ...[]byte) [][]byte {
		var out [][]byte
		for _, p := range pkts {
			out = append(out, append(make([]byte, off), p...))
		}
		return out
	}
	r.Write(batch(
		ipv4Packet("10.42.0.3", "10.42.0.2", 64),   // member: relayed
		ipv4Packet("10.42.0.3", "192.168.1.7", 64), // member subnet: relayed
		ipv4Packet("10.42.0.3", "10.42.0.1", 64),   // this node: local
		ipv4Packet("10.42.0.3", "8.8.8.8", 64),     // not a member: local (host drops or routes)
		ipv4Packet("10.42.0.3", "10.42.0.2", 1),    // TTL expires: dropped
	), off)
	if len(f.written) != 2 {
		t.Fatalf("%d packets to the host side, want 2", len(f.written))
	}
	if r.relayedN.Load() != 2 {
		t.Fatalf("relayed %d, want 2", r.relayedN.Load())
	}
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, off+1500)
	}
	sizes := make([]int, 4)
	n, err := r.Read(bufs, sizes, off)
	if err != nil || n != 2 {
		t.Fatalf("read %d, %v", n, err)
	}
	if dst, _ := packetDst(bufs[0][off : off+sizes[0]]); dst != netip.MustParseAddr("10.42.0.2") || bufs[0][off+8] != 63 {
		t.Errorf("first relayed packet: dst %v ttl %d", dst, bufs[0][off+8])
	}
	r.Close()
}
