package node

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// headerSumOK is the receiver's check of an IPv4 header checksum: the one's
// complement sum of all its words, the checksum included, is all ones.
func headerSumOK(h []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// FuzzRelayPacket: any packet wireguard-go hands the relay (decrypted, from
// a member) goes exactly one way. To a member's prefix with TTL left it is
// relayed with only the TTL (and IPv4 checksum) changed, and a valid
// checksum stays valid; to a member with TTL expiring it is dropped;
// anything else reaches the host side byte for byte.
func FuzzRelayPacket(f *testing.F) {
	f.Add(ipv4Packet("10.42.0.3", "10.42.0.2", 64))
	f.Add(ipv4Packet("10.42.0.3", "192.168.1.7", 2))
	f.Add(ipv4Packet("10.42.0.3", "10.42.0.2", 1))
	f.Add(ipv4Packet("10.42.0.3", "8.8.8.8", 64))
	f.Add(ipv4Packet("10.42.0.3", "10.42.0.2", 64)[:19])
	v6 := make([]byte, 48)
	v6[0], v6[7] = 0x60, 64
	dst := netip.MustParseAddr("fd42:42::2").As16()
	copy(v6[24:], dst[:])
	f.Add(v6)
	f.Add([]byte{})
	f.Add([]byte{0x50})
	members := []netip.Prefix{netip.MustParsePrefix("10.42.0.2/32"), netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd42:42::2/128")}
	inMembers := func(a netip.Addr) bool {
		for _, p := range members {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}

	f.Fuzz(func(t *testing.T, pkt []byte) {
		const off = 16
		ft := &fakeTUN{reads: make(chan []byte)}
		r := newRelayDevice(ft)
		defer r.Close()
		r.setMembers(members)
		buf := append(make([]byte, off), pkt...)
		if n, err := r.Write([][]byte{buf}, off); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		var relayed []byte
		select {
		case relayed = <-r.relayed:
		default:
		}
		d, parsed := packetDst(pkt)
		switch {
		case len(ft.written) == 1 && relayed == nil:
			if !bytes.Equal(ft.written[0], pkt) {
				t.Fatal("the host side got a changed packet")
			}
			if parsed && inMembers(d) {
				t.Fatalf("packet for member prefix %v went to the host side", d)
			}
		case len(ft.written) == 0 && relayed != nil:
			checkRelayed(t, pkt, relayed)
			if !parsed || !inMembers(d) {
				t.Fatalf("packet for %v (parsed %v) relayed", d, parsed)
			}
		case len(ft.written) == 0 && relayed == nil:
			ttl := byte(0)
			if parsed && pkt[0]>>4 == 4 {
				ttl = pkt[8]
			} else if parsed {
				ttl = pkt[7]
			}
			if !parsed || !inMembers(d) || ttl > 1 {
				t.Fatalf("packet for %v with TTL %d dropped", d, ttl)
			}
		default:
			t.Fatalf("packet went %d times to the host and relayed=%v", len(ft.written), relayed != nil)
		}
	})
}

func checkRelayed(t *testing.T, in, out []byte) {
	t.Helper()
	if len(in) != len(out) {
		t.Fatalf("relayed %d bytes of %d", len(out), len(in))
	}
	ttlAt, sumAt := 7, -1
	if in[0]>>4 == 4 {
		ttlAt, sumAt = 8, 10
	}
	for i := range in {
		if in[i] != out[i] && i != ttlAt && i != sumAt && i != sumAt+1 {
			t.Fatalf("relay changed byte %d", i)
		}
	}
	if out[ttlAt] != in[ttlAt]-1 || in[ttlAt] <= 1 {
		t.Fatalf("TTL %d relayed as %d", in[ttlAt], out[ttlAt])
	}
	if sumAt > 0 {
		if ihl := int(in[0]&0x0f) * 4; ihl >= 20 && ihl <= len(in) && headerSumOK(in[:ihl]) && !headerSumOK(out[:ihl]) {
			t.Fatal("a valid IPv4 header checksum became invalid")
		}
	}
}
