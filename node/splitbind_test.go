package node

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgmesh/wgmesh/netstack"
)

// coalesce mirrors wireguard-go's conn.coalesceMessages: it returns the
// payload sizes of the UDP messages one Send of bufs makes on Linux.
func coalesce(bufs [][]byte, ipMax int) []int {
	var msgs []int
	size, count, ended := 0, 0, false
	for i, buf := range bufs {
		n := len(buf)
		if i > 0 && !ended && n <= size && count < netstack.GSOMessageDatagrams && msgs[len(msgs)-1]+n <= ipMax {
			msgs[len(msgs)-1] += n
			count++
			ended = n < size
			continue
		}
		msgs = append(msgs, n)
		size, count, ended = n, 1, false
	}
	return msgs
}

// sends records each Send call's datagram sizes.
type sends struct {
	conn.Bind
	calls [][]int
}

func (s *sends) Send(bufs [][]byte, _ conn.Endpoint) error {
	var sizes []int
	for _, b := range bufs {
		sizes = append(sizes, len(b))
	}
	s.calls = append(s.calls, sizes)
	return nil
}

type stubEndpoint struct {
	conn.Endpoint
	dst netip.Addr
}

func (e stubEndpoint) DstIP() netip.Addr { return e.dst }

func batch(sizes ...int) [][]byte {
	var bufs [][]byte
	for _, n := range sizes {
		bufs = append(bufs, make([]byte, n))
	}
	return bufs
}

func repeat(n, size int) []int { return slices.Repeat([]int{size}, n) }

// TestSplitBindKeepsGSOMessagesBelowLimit: a TUN member at MTU 1392 sends
// 1,424-byte datagrams; wireguard-go would put 46 in one 65,504-byte
// message, which the kernel segments in software. The wrapper cuts the
// batch so that every message stays within netstack.GSOMessageMax, keeps
// the order and every datagram, and leaves batches that fit in one call.
func TestSplitBindKeepsGSOMessagesBelowLimit(t *testing.T) {
	v4 := stubEndpoint{dst: netip.MustParseAddr("198.18.0.1")}
	v6 := stubEndpoint{dst: netip.MustParseAddr("2001:db8::1")}
	cases := []struct {
		name  string
		sizes []int
		ep    stubEndpoint
		calls int
	}{
		{"mtu 1392 ipv4", repeat(128, 1424), v4, 3},
		{"mtu 1420 ipv4 fits", repeat(128, 1452), v4, 1},
		{"acks", repeat(128, 80), v4, 1},
		{"mtu 1392 then a short one", append(repeat(46, 1424), 100), v4, 2},
		{"past wireguard-go's own bound", repeat(92, 1439), v4, 1},
		{"mtu 1392 ipv6", repeat(50, 1424), v6, 2},
		{"mixed", append(append(repeat(30, 1424), 600), repeat(60, 1424)...), v4, 2},
		{"empty", nil, v4, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ipMax := splitIPv4Max
			if c.ep.dst.Is6() {
				ipMax = splitIPv6Max
			}
			inner := &sends{}
			if err := newSplitBind(inner).Send(batch(c.sizes...), c.ep); err != nil {
				t.Fatal(err)
			}
			var all []int
			for _, call := range inner.calls {
				all = append(all, call...)
				for _, m := range coalesce(batch(call...), ipMax) {
					if m > netstack.GSOMessageMax {
						t.Errorf("a message of %d bytes passes %d", m, netstack.GSOMessageMax)
					}
				}
			}
			if !slices.Equal(all, c.sizes) {
				t.Errorf("datagrams sent %v, want %v", all, c.sizes)
			}
			if len(inner.calls) != c.calls {
				t.Errorf("%d Send calls, want %d", len(inner.calls), c.calls)
			}
		})
	}
}

// BenchmarkSplitBindSend: what Send adds to a full batch that needs no
// cut (MTU 1420) and to one that needs two (MTU 1392), on an inner bind
// that does nothing.
func BenchmarkSplitBindSend(b *testing.B) {
	var ep conn.Endpoint = stubEndpoint{dst: netip.MustParseAddr("198.18.0.1")}
	for _, size := range []int{1452, 1424} {
		bufs := batch(repeat(128, size)...)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			sb := newSplitBind(nopBind{})
			b.ReportAllocs()
			for b.Loop() {
				if err := sb.Send(bufs, ep); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopBind struct{ conn.Bind }

func (nopBind) Send([][]byte, conn.Endpoint) error { return nil }
