package node

import (
	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgmesh/wgmesh/netstack"
)

// splitBind wraps the node's conn.Bind so that no UDP GSO message passes
// the kernel's GSO limit, in both modes.
//
// On Linux wireguard-go's StdNetBind coalesces consecutive datagrams of
// equal size in one Send into one UDP_SEGMENT message of up to 64
// datagrams and 65,507 bytes of payload (IPv4; 65,527 over IPv6). The
// kernel segments a GSO packet in software, datagram by datagram, once it
// reaches the device's GSO limit (64 KiB on veth and most NICs) counting
// the link, IP and UDP headers too; the receiver's UDP GRO then gets them
// one by one. A TUN member at MTU 1392 (1,424-byte datagrams, 46 to a
// message: 65,504 bytes) hits that gap exactly, as does upstream
// wireguard-go. So Send cuts its batch in front of a datagram that would
// take a message past netstack.GSOMessageMax; the cut costs one more
// sendmmsg. The netstack link endpoint already ends its batches at the
// same bound (netstack/sendrun.go), so in netstack mode Send never cuts.
type splitBind struct {
	conn.Bind
}

func newSplitBind(b conn.Bind) *splitBind { return &splitBind{Bind: b} }

// Send hands bufs to the inner bind in as few calls as keep every message
// it coalesces within netstack.GSOMessageMax.
func (b *splitBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	ipMax := splitIPv4Max
	if ep.DstIP().Is6() {
		ipMax = splitIPv6Max
	}
	for {
		cut := splitCut(bufs, ipMax)
		if cut == len(bufs) {
			return b.Bind.Send(bufs, ep)
		}
		if err := b.Bind.Send(bufs[:cut], ep); err != nil {
			return err
		}
		bufs = bufs[cut:]
	}
}

// wireguard-go's own bounds on a message's payload (conn.maxIPv4PayloadLen
// and maxIPv6PayloadLen): past them it starts a new message by itself.
const (
	splitIPv4Max = 1<<16 - 1 - 20 - 8
	splitIPv6Max = 1<<16 - 1 - 8
)

// splitCut returns the first index in front of which Send cuts bufs, or
// len(bufs): where wireguard-go (conn.coalesceMessages) would append the
// datagram to the message being built, within its bound ipMax, though
// that takes the message past netstack.GSOMessageMax. Only runs of
// equal-size datagrams longer than 64 KiB in all are cut, so a batch that
// is not one (ACKs, interactive traffic) costs one pass over its lengths.
func splitCut(bufs [][]byte, ipMax int) int {
	var (
		size  int  // datagram size of the message being built (its first)
		bytes int  // its payload so far
		count int  // its datagrams
		ended bool // a smaller datagram closed it
	)
	for i, buf := range bufs {
		n := len(buf)
		coalesces := count > 0 && !ended && n <= size && count < netstack.GSOMessageDatagrams && bytes+n <= ipMax
		switch {
		case coalesces && bytes+n > netstack.GSOMessageMax:
			// wireguard-go would append it; the kernel would segment.
			return i
		case coalesces:
			bytes += n
			count++
			ended = n < size
		default:
			size, bytes, count, ended = n, n, 1, false
		}
	}
	return len(bufs)
}
