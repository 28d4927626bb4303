package netstack

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header/parse"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestHeadersLen(t *testing.T) {
	ts := tsOption(1, 2) // 12 bytes of TCP options
	frag := tcpPacket(false, 1, tcpFlagACK, nil, make([]byte, 100), true)
	frag[6] |= 0x20 // more fragments: the TCP header is not parsed
	udp := tcpPacket(false, 1, tcpFlagACK, nil, make([]byte, 100), true)
	udp[9] = 17
	for _, tc := range []struct {
		name string
		p    []byte
		want int
	}{
		{"ipv4 tcp", tcpPacket(false, 1, tcpFlagACK, nil, make([]byte, 100), true), 40},
		{"ipv4 tcp options", tcpPacket(false, 1, tcpFlagACK, ts, make([]byte, 100), true), 52},
		{"ipv6 tcp options", tcpPacket(true, 1, tcpFlagACK, ts, make([]byte, 100), true), 72},
		{"ipv4 fragment", frag, 20},
		{"ipv4 not tcp", udp, 20},
		{"truncated tcp header", tcpPacket(false, 1, tcpFlagACK, ts, nil, true)[:45], 20},
		{"too short", []byte{0x45, 0, 0}, 0},
		{"not ip", make([]byte, 60), 0},
	} {
		if got := headersLen(tc.p); got != tc.want {
			t.Errorf("%s: headersLen = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSplitHeadersLeavesPayloadInPlace reads an inbound segment the way
// gVisor's IPv4 layer does (a view of the IP header held while the header
// is read again) and checks that the payload still lies in the memory it
// was received into: with the packet in one chunk, gVisor copies the whole
// chunk at that second read.
func TestSplitHeadersLeavesPayloadInPlace(t *testing.T) {
	payload := bytes.Repeat([]byte("wgmesh"), 10000)
	for _, tc := range []struct {
		v6, copied bool // copied: a packet that did not coalesce, copied from wireguard-go's buffer
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		p := tcpPacket(tc.v6, 1, tcpFlagACK, tsOption(1, 2), payload, true)
		var v *buffer.View
		if !tc.copied {
			v = buffer.NewViewWithData(p)
			p = v.AsSlice()
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: splitHeaders(p, v)})
		slices := pkt.AsSlices()
		in := &slices[len(slices)-1][0]
		if !tc.copied && in != &p[len(p)-len(payload)] {
			t.Errorf("%+v: the payload is not in the view it was coalesced into", tc)
		}
		var ok bool
		if tc.v6 {
			_, _, _, _, ok = parse.IPv6(pkt)
		} else {
			ok = parse.IPv4(pkt)
		}
		if !ok {
			t.Fatalf("%+v: the packet does not parse", tc)
		}
		held := pkt.NetworkHeader().View()
		_ = pkt.NetworkHeader().Slice()
		if !parse.TCP(pkt) {
			t.Fatalf("%+v: the TCP header does not parse", tc)
		}
		held.Release()
		slices = pkt.AsSlices()
		last := slices[len(slices)-1]
		if &last[0] != in {
			t.Errorf("%+v: the payload was copied out of the chunk it arrived in", tc)
		}
		if got := pkt.Data().AsRange().ToSlice(); !bytes.Equal(got, payload) {
			t.Errorf("%+v: payload differs (%d bytes, want %d)", tc, len(got), len(payload))
		}
		pkt.DecRef()
	}
}
