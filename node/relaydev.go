package node

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// relayDevice wraps the data-plane device of a relay member. Packets that
// wireguard-go decrypted and that are addressed to another member are not
// handed to the host or stack: they go straight back into wireguard-go as
// outbound traffic, which encrypts them to that member. The relay works in
// userspace, in TUN and netstack mode alike, with no kernel forwarding.
//
// wireguard-go has already checked, before Write, that each packet's
// source address belongs to the member it came from; the relay only adds
// that the destination must be another member's address or subnet.
type relayDevice struct {
	tun.Device
	// members holds every member's prefixes except this node's.
	members atomic.Pointer[prefixSet]

	pumpOnce sync.Once
	in       chan *packetBatch // from the wrapped device
	relayed  chan []byte       // decrypted packets to send back out
	done     chan struct{}
	closeMu  sync.Once
	pool     sync.Pool
	relayedN atomic.Uint64
}

type packetBatch struct {
	bufs  [][]byte
	sizes []int
	n     int
	err   error
}

// prefixSet answers "is this address in one of these prefixes".
type prefixSet struct{ prefixes []netip.Prefix }

func (s *prefixSet) contains(a netip.Addr) bool {
	if s == nil {
		return false
	}
	for _, p := range s.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// relayQueue bounds packets waiting to be sent back out; beyond it they
// are dropped, as a full NIC ring would.
const relayQueue = 1024

func newRelayDevice(d tun.Device) *relayDevice {
	r := &relayDevice{
		Device:  d,
		in:      make(chan *packetBatch),
		relayed: make(chan []byte, relayQueue),
		done:    make(chan struct{}),
	}
	r.members.Store(&prefixSet{})
	return r
}

// setMembers replaces the prefixes the relay forwards to.
func (r *relayDevice) setMembers(prefixes []netip.Prefix) {
	r.members.Store(&prefixSet{prefixes: append([]netip.Prefix(nil), prefixes...)})
}

// pump reads the wrapped device in its own goroutine so Read can wait for
// either its packets or relayed ones.
func (r *relayDevice) pump(offset int) {
	batch := r.Device.BatchSize()
	for {
		b, _ := r.pool.Get().(*packetBatch)
		if b == nil {
			b = &packetBatch{bufs: make([][]byte, batch), sizes: make([]int, batch)}
			for i := range b.bufs {
				b.bufs[i] = make([]byte, offset+65535)
			}
		}
		b.n, b.err = r.Device.Read(b.bufs, b.sizes, offset)
		select {
		case r.in <- b:
		case <-r.done:
			return
		}
		if b.err != nil {
			return
		}
	}
}

// Read implements tun.Device.
func (r *relayDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r.pumpOnce.Do(func() { go r.pump(offset) })
	select {
	case b := <-r.in:
		if b.err != nil && b.n == 0 {
			return 0, b.err
		}
		n := min(b.n, len(bufs))
		for i := range n {
			sizes[i] = copy(bufs[i][offset:], b.bufs[i][offset:offset+b.sizes[i]])
		}
		r.pool.Put(b)
		return n, nil
	case p := <-r.relayed:
		n := 0
		for {
			sizes[n] = copy(bufs[n][offset:], p)
			n++
			if n == len(bufs) {
				return n, nil
			}
			select {
			case p = <-r.relayed:
			default:
				return n, nil
			}
		}
	case <-r.done:
		return 0, os.ErrClosed
	}
}

// Write implements tun.Device: relayed packets go back out, the rest to
// the wrapped device.
func (r *relayDevice) Write(bufs [][]byte, offset int) (int, error) {
	members := r.members.Load()
	local := bufs[:0:0]
	for _, b := range bufs {
		pkt := b[offset:]
		dst, ok := packetDst(pkt)
		if !ok || !members.contains(dst) {
			local = append(local, b)
			continue
		}
		if !decrementTTL(pkt) {
			continue // expired: a routing loop between relays
		}
		select {
		case r.relayed <- append([]byte(nil), pkt...):
			r.relayedN.Add(1)
		default:
		}
	}
	if len(local) > 0 {
		if _, err := r.Device.Write(local, offset); err != nil {
			return 0, err
		}
	}
	return len(bufs), nil
}

// Close implements tun.Device.
func (r *relayDevice) Close() error {
	r.closeMu.Do(func() { close(r.done) })
	return r.Device.Close()
}

// packetDst returns an IP packet's destination address.
func packetDst(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 1 {
		return netip.Addr{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

// decrementTTL lowers the IPv4 TTL (fixing the header checksum
// incrementally, RFC 1624) or the IPv6 hop limit, as a router does. It
// reports false when the packet must be dropped.
func decrementTTL(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case 4:
		if pkt[8] <= 1 {
			return false
		}
		pkt[8]--
		// The TTL is the high byte of the 16-bit word at offset 8.
		sum := uint32(binary.BigEndian.Uint16(pkt[10:12])) + 0x0100
		sum = (sum & 0xffff) + (sum >> 16)
		binary.BigEndian.PutUint16(pkt[10:12], uint16(sum))
	case 6:
		if pkt[7] <= 1 {
			return false
		}
		pkt[7]--
	}
	return true
}
