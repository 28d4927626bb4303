package node

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/peerbook"
)

// lazyDevice wraps the node's data-plane device (TUN or netstack, and the
// relay's wrapper when there is one) on the outbound side: a packet that
// wireguard-go reads for a destination that belongs to an idle member
// (removed from the device, see lazy.go) first configures that member,
// synchronously, so that wireguard-go finds the peer by its allowed IPs
// when it routes the packet, queues it and starts the handshake: the
// packet is not lost and leaves one handshake round trip later.
//
// While no member is idle it costs one atomic load per batch; while some
// are, one map lookup per packet whose destination differs from the
// previous packet's in the batch.
type lazyDevice struct {
	tun.Device
	routes atomic.Pointer[idleRoutes]
	wake   func(peerbook.Key)
}

// idleRoutes maps the prefixes of idle members to their keys: single
// addresses in a map, wider prefixes (subnets) in a short list.
type idleRoutes struct {
	addrs    map[netip.Addr]peerbook.Key
	prefixes []idlePrefix
}

type idlePrefix struct {
	p netip.Prefix
	k peerbook.Key
}

func (r *idleRoutes) empty() bool { return r == nil || len(r.addrs) == 0 && len(r.prefixes) == 0 }

func (r *idleRoutes) lookup(a netip.Addr) (peerbook.Key, bool) {
	if k, ok := r.addrs[a]; ok {
		return k, true
	}
	for _, p := range r.prefixes {
		if p.p.Contains(a) {
			return p.k, true
		}
	}
	return peerbook.Key{}, false
}

func newIdleRoutes(idle map[peerbook.Key]*idleRecord) *idleRoutes {
	r := &idleRoutes{addrs: make(map[netip.Addr]peerbook.Key, len(idle))}
	for k, rec := range idle {
		for _, p := range rec.cfg.allowedIPs {
			if p.IsSingleIP() {
				r.addrs[p.Addr()] = k
			} else {
				r.prefixes = append(r.prefixes, idlePrefix{p.Masked(), k})
			}
		}
	}
	return r
}

func newLazyDevice(d tun.Device, wake func(peerbook.Key)) *lazyDevice {
	return &lazyDevice{Device: d, wake: wake}
}

// Read reads packets from the wrapped device and wakes the idle members
// they are addressed to before wireguard-go routes them.
func (d *lazyDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	r := d.routes.Load()
	if n == 0 || r.empty() {
		return n, err
	}
	var last netip.Addr
	var last4 uint32 // last as a number when IPv4: the common case, compared cheaply
	for i := 0; i < n; i++ {
		pkt := bufs[i][offset : offset+sizes[i]]
		if len(pkt) >= 20 && pkt[0]>>4 == 4 {
			if d4 := binary.BigEndian.Uint32(pkt[16:20]); last.Is4() && d4 == last4 {
				continue
			} else {
				last4 = d4
			}
		}
		dst, ok := packetDst(pkt)
		if !ok || dst == last {
			continue
		}
		last = dst
		if k, ok := r.lookup(dst); ok {
			d.wake(k)
			// The wake republished the routes without k; a later packet
			// of the batch for another idle member needs the new table.
			r = d.routes.Load()
			if r.empty() {
				break
			}
		}
	}
	return n, err
}
