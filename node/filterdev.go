package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/filter"
	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// filterDevice enforces the book's access rules ([[rule]]) on the data
// plane: it wraps the TUN device or the netstack, below wireguard-go, so
// that TUN mode, netstack services, forwards, proxies and the rootless
// subnet router all pass through it.
//
// Write carries packets wireguard-go decrypted towards the host or the
// stack: each is judged by filter.Inbound and the denied ones are taken out
// of the batch (the batch is compacted in place, nothing is allocated).
// Read carries packets leaving towards wireguard-go: filter.Outbound notes
// the flows this member (or a host in its subnets) starts, so their replies
// pass.
//
// Packets are single IP packets at this layer in both modes: wireguard-go
// writes each decrypted packet as one buffer (the kernel TUN device
// coalesces them, GRO, only inside its own Write; the netstack link
// endpoint does the same inside its write), and the device's Read hands
// over packets already cut to MTU size (the kernel TUN device splits GSO
// super-packets in its Read, the netstack link endpoint in its read). So
// the filter never sees a coalesced segment and judges every packet.
//
// On a relay member the relay wraps this device, not the other way round:
// packets the relay forwards for other members go back out before they
// reach the filter, and the member they are for judges them by their
// original source address, which its WireGuard bound to the relay's key
// only because the book routes that member through the relay.
type filterDevice struct {
	tun.Device
	f *filter.Filter
	// exitNode is Config.ExitNode: packets from outside the mesh count
	// as that member's (filter.CompileWithExit).
	exitNode string

	// drops holds the drop counters of the book's members by name; the
	// map is replaced on reload, the counters carried over.
	drops    atomic.Pointer[dropTable]
	dropsMu  sync.Mutex // serializes setBook
	unknown  dropCounts // drops of packets from no member (not-a-member, malformed)
	dropLog  *netutil.RateLog
	debugLog func() bool
}

// dropReasons are the filter's drop verdicts, in counter order.
var dropReasons = [...]filter.Verdict{filter.DropNoRule, filter.DropNotMember, filter.DropFragment, filter.DropMalformed}

// dropCounts counts one member's dropped packets by reason (the index of
// the verdict in dropReasons).
type dropCounts [len(dropReasons)]atomic.Uint64

func (c *dropCounts) add(v filter.Verdict) {
	if i := int(v - filter.DropNoRule); i >= 0 && i < len(c) {
		c[i].Add(1)
	}
}

// snapshot returns the non-zero counters by reason name, nil when none.
func (c *dropCounts) snapshot() map[string]uint64 {
	var out map[string]uint64
	for i := range c {
		if v := c[i].Load(); v > 0 {
			if out == nil {
				out = make(map[string]uint64, len(c))
			}
			out[dropReasons[i].String()] = v
		}
	}
	return out
}

type dropTable struct {
	byName map[string]*dropCounts
}

func newFilterDevice(d tun.Device, f *filter.Filter, log *slog.Logger) *filterDevice {
	fd := &filterDevice{
		Device:  d,
		f:       f,
		dropLog: netutil.NewRateLogLevel(log, 0, slog.LevelDebug),
		debugLog: func() bool {
			return log.Enabled(context.Background(), slog.LevelDebug)
		},
	}
	fd.drops.Store(&dropTable{})
	return fd
}

// setBook makes the drop counters follow book's members: new members get
// counters, departed ones lose theirs, the others keep counting.
func (d *filterDevice) setBook(book *peerbook.Book, self peerbook.Key) {
	d.dropsMu.Lock()
	defer d.dropsMu.Unlock()
	old := d.drops.Load()
	t := &dropTable{byName: make(map[string]*dropCounts, len(book.Peers))}
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == self {
			continue
		}
		c := old.byName[p.Name]
		if c == nil {
			c = new(dropCounts)
		}
		t.byName[p.Name] = c
	}
	d.drops.Store(t)
}

// dropped returns the non-zero drop counters of member name by reason
// (nil when there are none).
func (d *filterDevice) dropped(name string) map[string]uint64 {
	if c := d.drops.Load().byName[name]; c != nil {
		return c.snapshot()
	}
	return nil
}

// Write implements tun.Device: packets the rules deny are dropped, the
// rest go on to the wrapped device.
func (d *filterDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.f.Rules().Open() {
		return d.Device.Write(bufs, offset)
	}
	kept := 0
	for i := range bufs {
		pkt := bufs[i][offset:]
		if v, peer := d.f.Inbound(pkt); v.Drop() {
			d.drop(v, peer, pkt)
			continue
		}
		// Swap rather than overwrite, so the caller's slice still holds
		// every one of its buffers, in another order.
		bufs[kept], bufs[i] = bufs[i], bufs[kept]
		kept++
	}
	if kept > 0 {
		if _, err := d.Device.Write(bufs[:kept], offset); err != nil {
			return 0, err
		}
	}
	return len(bufs), nil
}

// drop counts a dropped packet and logs it at debug level, at most one
// line per netutil.DefaultLogInterval.
func (d *filterDevice) drop(v filter.Verdict, peer string, pkt []byte) {
	if peer == "" {
		d.unknown.add(v)
	} else if c := d.drops.Load().byName[peer]; c != nil {
		c.add(v)
	}
	if !d.debugLog() {
		return
	}
	src, dst, proto, port := packetSummary(pkt)
	attrs := []any{"reason", v.String(), "proto", proto, "src", src.String(), "dst", dst.String()}
	if peer != "" {
		attrs = append(attrs, "peer", peer)
	}
	if port != 0 {
		attrs = append(attrs, "port", port)
	}
	d.dropLog.Log("access rules dropped a packet from the mesh", attrs...)
}

// Read implements tun.Device: every packet leaving for the mesh is shown
// to the filter, which tracks the flows it starts.
func (d *filterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	for i := range n {
		d.f.Outbound(bufs[i][offset : offset+sizes[i]])
	}
	return n, err
}

// packetSummary reads the addresses, protocol and destination port of an
// IP packet for a log line (no extension headers: ports stay 0 then).
func packetSummary(pkt []byte) (src, dst netip.Addr, proto string, port uint16) {
	var p uint8
	off := 0
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		p, off = pkt[9], int(pkt[0]&0x0f)*4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		p, off = pkt[6], 40
	default:
		return src, dst, "malformed", 0
	}
	switch p {
	case 6:
		proto = "tcp"
	case 17:
		proto = "udp"
	case 1, 58:
		return src, dst, "icmp", 0
	default:
		return src, dst, "ip-proto-" + strconv.Itoa(int(p)), 0
	}
	if off+4 <= len(pkt) {
		port = uint16(pkt[off+2])<<8 | uint16(pkt[off+3])
	}
	return src, dst, proto, port
}

// setRules compiles book's access rules for this member and puts them in
// force at once, with the mesh DNS / registry port (Config.RegistryPort)
// as a port that no rule closes. Flows the new rules no longer allow are
// cut at their next packet.
func (d *filterDevice) setRules(book *peerbook.Book, self peerbook.Key, meshPort uint16) error {
	r, err := filter.CompileWithExit(book, self, d.exitNode, meshPort)
	if err != nil {
		return err
	}
	d.setBook(book, self)
	d.f.Swap(r)
	return nil
}

// applyRulesLocked puts book's access rules in force, in place of old's
// (nil at start-up). Runs on the loop (or in Up before the loop starts).
func (n *Node) applyRulesLocked(old, book *peerbook.Book) error {
	if n.filter == nil {
		return nil
	}
	before := n.filter.f.Rules()
	if err := n.filter.setRules(book, n.self, n.registryPort()); err != nil {
		return fmt.Errorf("node: access rules: %w", err)
	}
	if after := n.filter.f.Rules(); old == nil || !peerbook.RulesEqual(old.Rules, book.Rules) || before.Open() != after.Open() {
		if after.Open() {
			n.log.Info("no access rules in the book: every member may open every flow")
		} else {
			n.log.Info("access rules in force", "rules", after.Len(), "tracked_flows", n.filter.f.Flows())
		}
	}
	return nil
}

// peerDrops fills in the drop counters of member ps.
func (d *filterDevice) peerDrops(ps *PeerStatus) {
	if d == nil {
		return
	}
	ps.DroppedBy = d.dropped(ps.Name)
	ps.Dropped = 0
	for _, v := range ps.DroppedBy {
		ps.Dropped += v
	}
}

// nodeDrops fills in the rule count and the drops of packets from no
// member.
func (d *filterDevice) nodeDrops(st *Status) {
	if d == nil {
		return
	}
	st.Rules = d.f.Rules().Len()
	st.Dropped = d.unknown.snapshot()
}
