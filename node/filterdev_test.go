package node

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/filter"
	"github.com/wgmesh/wgmesh/peerbook"
)

// rulesBook is a book of members srv (10.42.0.1, group servers), staff
// (10.42.0.2, group staff), ci (10.42.0.3) and other (10.42.0.4), with
// rules (TOML [[rule]] tables) appended. It returns the book and the keys.
func rulesBook(t testing.TB, rules string) (*peerbook.Book, []peerbook.PrivateKey) {
	t.Helper()
	var b strings.Builder
	b.WriteString("format = 1\n[mesh]\nnetworks = [\"10.42.0.0/16\", \"fd42:42::/64\"]\n")
	var keys []peerbook.PrivateKey
	for i, m := range []struct{ name, groups string }{{"srv", `"servers"`}, {"staff", `"staff"`}, {"ci", ``}, {"other", ``}} {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		fmt.Fprintf(&b, "\n[[peer]]\nname = %q\npublic_key = %q\naddresses = [\"10.42.0.%d\", \"fd42:42::%d\"]\ngroups = [%s]\n", m.name, k.Public().String(), i+1, i+1, m.groups)
	}
	b.WriteString(rules)
	book, err := peerbook.Parse("rules.toml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return book, keys
}

// Test packets, with the transport checksums left zero (the filter does
// not read them).
func ipPacket(src, dst string, proto byte, l4 []byte) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	if s.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0], h[8], h[9] = 0x45, 64, proto
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		a, b := s.As4(), d.As4()
		copy(h[12:], a[:])
		copy(h[16:], b[:])
		binary.BigEndian.PutUint16(h[10:], ipv4Checksum(h))
		return append(h, l4...)
	}
	if proto == 1 {
		proto = 58
	}
	h := make([]byte, 40, 40+len(l4))
	h[0], h[6], h[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	a, b := s.As16(), d.As16()
	copy(h[8:], a[:])
	copy(h[24:], b[:])
	return append(h, l4...)
}

const (
	synFlag = 0x02
	ackFlag = 0x10
)

func tcpPacket(src string, sport uint16, dst string, dport uint16, flags byte) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	l4[12], l4[13] = 5<<4, flags
	return ipPacket(src, dst, 6, l4)
}

func udpPacket(src string, sport uint16, dst string, dport uint16) []byte {
	l4 := make([]byte, 12)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], 12)
	return ipPacket(src, dst, 17, l4)
}

// echoPacket is an ICMP (or ICMPv6) echo request, or reply with reply.
func echoPacket(src, dst string, id uint16, reply bool) []byte {
	l4 := make([]byte, 16)
	v6 := netip.MustParseAddr(src).Is6()
	switch {
	case !v6 && !reply:
		l4[0] = 8
	case !v6 && reply:
		l4[0] = 0
	case v6 && !reply:
		l4[0] = 128
	default:
		l4[0] = 129
	}
	binary.BigEndian.PutUint16(l4[4:], id)
	return ipPacket(src, dst, 1, l4)
}

// recordTUN is a tun.Device that keeps what it is given and reads out
// what the test queues.
type recordTUN struct {
	mu      sync.Mutex
	written [][]byte
	queue   [][]byte
}

func (f *recordTUN) File() *os.File           { return nil }
func (f *recordTUN) MTU() (int, error)        { return 1420, nil }
func (f *recordTUN) Name() (string, error)    { return "record", nil }
func (f *recordTUN) Events() <-chan tun.Event { return nil }
func (f *recordTUN) BatchSize() int           { return 128 }
func (f *recordTUN) Close() error             { return nil }
func (f *recordTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range bufs {
		f.written = append(f.written, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}
func (f *recordTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(bufs) && len(f.queue) > 0 {
		sizes[n] = copy(bufs[n][offset:], f.queue[0])
		f.queue = f.queue[1:]
		n++
	}
	return n, nil
}

func (f *recordTUN) take() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.written
	f.written = nil
	return w
}

const testOffset = 16

func batchOf(pkts ...[]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = append(make([]byte, testOffset, testOffset+len(p)), p...)
	}
	return out
}

// newTestFilterDev wraps a recordTUN in a filterDevice for member index
// self of book, with debug logs into logs (may be nil).
func newTestFilterDev(t testing.TB, book *peerbook.Book, keys []peerbook.PrivateKey, self int, logs *bytes.Buffer) (*filterDevice, *recordTUN) {
	t.Helper()
	rec := &recordTUN{}
	log := slog.New(slog.DiscardHandler)
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := newFilterDevice(rec, filter.New(nil, filter.Options{}), log)
	if err := d.setRules(book, keys[self].Public(), DefaultRegistryPort); err != nil {
		t.Fatal(err)
	}
	return d, rec
}

const testRules = `
[[rule]]
from = ["group:staff"]
to = ["group:servers"]
ports = ["tcp:22", "icmp"]

[[rule]]
from = ["ci"]
to = ["srv"]
ports = ["udp:8000-8100"]
`

// TestFilterDeviceWrite: a batch written by wireguard-go reaches the
// device without the packets the rules deny, in order, and the drops are
// counted by member and reason.
func TestFilterDeviceWrite(t *testing.T) {
	book, keys := rulesBook(t, testRules)
	var logs bytes.Buffer
	d, rec := newTestFilterDev(t, book, keys, 0, &logs)
	in := [][]byte{
		tcpPacket("10.42.0.2", 40000, "10.42.0.1", 22, synFlag), // staff ssh: rule
		tcpPacket("10.42.0.2", 40001, "10.42.0.1", 80, synFlag), // staff http: no rule
		udpPacket("10.42.0.3", 40000, "10.42.0.1", 8050),        // ci udp in range: rule
		udpPacket("10.42.0.3", 40000, "10.42.0.1", 8101),        // ci udp out of range
		tcpPacket("10.42.0.3", 40000, "10.42.0.1", 22, synFlag), // ci ssh: no rule
		echoPacket("10.42.0.2", "10.42.0.1", 7, false),          // staff ping: icmp rule
		echoPacket("fd42:42::2", "fd42:42::1", 7, false),        // staff ping6: icmp rule
		echoPacket("10.42.0.4", "10.42.0.1", 7, false),          // other ping: no rule
		udpPacket("10.42.0.4", 40000, "10.42.0.1", 53),          // mesh DNS: never blocked
		tcpPacket("10.99.0.9", 40000, "10.42.0.1", 22, synFlag), // not a member
		{0x45, 0, 0}, // malformed
		tcpPacket("fd42:42::2", 40000, "fd42:42::1", 22, synFlag),   // staff ssh over IPv6
		tcpPacket("fd42:42::4", 40000, "fd42:42::1", 22, synFlag),   // other ssh over IPv6
		tcpPacket("10.42.0.2", 40000, "10.42.0.1", 22, ackFlag),     // staff ssh, established
		tcpPacket("10.42.0.1", 40000, "10.42.0.1", 22, ackFlag)[:0], // empty
	}
	want := [][]byte{in[0], in[2], in[5], in[6], in[8], in[11], in[13]}
	bufs := batchOf(in...)
	n, err := d.Write(bufs, testOffset)
	if err != nil || n != len(in) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	got := rec.take()
	if len(got) != len(want) {
		t.Fatalf("%d packets passed, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("packet %d passed out of order or changed", i)
		}
	}
	// The caller's batch still holds each of its buffers.
	seen := map[*byte]bool{}
	for _, b := range bufs {
		seen[&b[:1][0]] = true
	}
	if len(seen) != len(in) {
		t.Errorf("the batch holds %d distinct buffers after Write, want %d", len(seen), len(in))
	}

	st := Status{}
	d.nodeDrops(&st)
	if st.Rules != 2 || st.Dropped["not-a-member"] != 1 || st.Dropped["malformed"] != 2 {
		t.Errorf("node drops: rules %d, %v", st.Rules, st.Dropped)
	}
	for name, want := range map[string]uint64{"staff": 1, "ci": 2, "other": 2} {
		ps := PeerStatus{Name: name}
		d.peerDrops(&ps)
		if ps.Dropped != want || ps.DroppedBy["no-rule"] != want {
			t.Errorf("%s: dropped %d %v, want %d no-rule", name, ps.Dropped, ps.DroppedBy, want)
		}
	}
	// One debug line, rate-limited: the rest are counted, not logged.
	if c := strings.Count(logs.String(), "access rules dropped a packet"); c != 1 {
		t.Errorf("%d drop lines logged, want 1:\n%s", c, logs.String())
	}
	if !strings.Contains(logs.String(), "level=DEBUG") || !strings.Contains(logs.String(), "reason=no-rule") || !strings.Contains(logs.String(), "peer=staff") || !strings.Contains(logs.String(), "port=80") {
		t.Errorf("drop line lacks its facts:\n%s", logs.String())
	}
}

// TestFilterDeviceStateful: what this member sends (Read) opens the way
// back for the replies; the reverse flow, unsolicited, stays closed.
func TestFilterDeviceStateful(t *testing.T) {
	book, keys := rulesBook(t, testRules)
	d, rec := newTestFilterDev(t, book, keys, 1, nil) // staff: nothing may open flows to it
	rec.queue = [][]byte{
		tcpPacket("10.42.0.2", 40000, "10.42.0.1", 22, synFlag),
		echoPacket("10.42.0.2", "10.42.0.4", 9, false),
		udpPacket("10.42.0.2", 5353, "10.42.0.3", 9000),
	}
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, testOffset+1500)
	}
	sizes := make([]int, len(bufs))
	if n, err := d.Read(bufs, sizes, testOffset); n != 3 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
	in := [][]byte{
		tcpPacket("10.42.0.1", 22, "10.42.0.2", 40000, synFlag|ackFlag), // reply: tracked
		echoPacket("10.42.0.4", "10.42.0.2", 9, true),                   // pong: tracked
		udpPacket("10.42.0.3", 9000, "10.42.0.2", 5353),                 // udp reply: tracked
		tcpPacket("10.42.0.1", 22, "10.42.0.2", 40001, synFlag|ackFlag), // another port: not
		tcpPacket("10.42.0.1", 40000, "10.42.0.2", 22, synFlag),         // reverse: not
		echoPacket("10.42.0.4", "10.42.0.2", 9, false),                  // ping to staff: not
	}
	d.Write(batchOf(in...), testOffset)
	if got := rec.take(); len(got) != 3 || !bytes.Equal(got[0], in[0]) || !bytes.Equal(got[1], in[1]) || !bytes.Equal(got[2], in[2]) {
		t.Fatalf("%d packets passed, want the 3 replies", len(got))
	}
}

// TestFilterDeviceOpen: without rules every packet passes, the batch
// untouched, and nothing is counted.
func TestFilterDeviceOpen(t *testing.T) {
	book, keys := rulesBook(t, "")
	d, rec := newTestFilterDev(t, book, keys, 0, nil)
	in := [][]byte{tcpPacket("10.42.0.4", 1, "10.42.0.1", 22, synFlag), tcpPacket("10.99.0.9", 1, "10.42.0.1", 22, synFlag), {0x45}}
	d.Write(batchOf(in...), testOffset)
	if got := rec.take(); len(got) != len(in) {
		t.Fatalf("%d of %d passed with no rules", len(got), len(in))
	}
	st := Status{}
	d.nodeDrops(&st)
	if st.Rules != 0 || st.Dropped != nil {
		t.Errorf("open: %+v", st)
	}
}

// TestFilterDeviceSwapKeepsCounts: a reload keeps the counts of members
// that stay, forgets those of members that left, and changes the verdict
// of the next packet.
func TestFilterDeviceSwapKeepsCounts(t *testing.T) {
	book, keys := rulesBook(t, testRules)
	d, rec := newTestFilterDev(t, book, keys, 0, nil)
	http := tcpPacket("10.42.0.2", 40000, "10.42.0.1", 80, synFlag)
	d.Write(batchOf(http), testOffset)
	if len(rec.take()) != 0 {
		t.Fatal("http passed before the rule")
	}
	opened, _ := rulesBook(t, testRules+"\n[[rule]]\nfrom = [\"staff\"]\nto = [\"srv\"]\nports = [\"tcp:80\"]\n")
	// Same members, same keys: reuse the first book's keys.
	for i := range opened.Peers {
		opened.Peers[i].PublicKey = book.Peers[i].PublicKey
	}
	if err := d.setRules(opened, keys[0].Public(), DefaultRegistryPort); err != nil {
		t.Fatal(err)
	}
	d.Write(batchOf(http), testOffset)
	if len(rec.take()) != 1 {
		t.Fatal("http still dropped after the rule was added")
	}
	ps := PeerStatus{Name: "staff"}
	d.peerDrops(&ps)
	if ps.Dropped != 1 {
		t.Errorf("staff's count after the reload: %d, want 1", ps.Dropped)
	}
	if err := d.setRules(book, keys[0].Public(), DefaultRegistryPort); err != nil {
		t.Fatal(err)
	}
	d.Write(batchOf(http), testOffset)
	if len(rec.take()) != 0 {
		t.Fatal("http passed after the rule was removed")
	}
}

// TestFilterDeviceNoAllocations: judging and compacting a batch allocates
// nothing, with rules and without.
func TestFilterDeviceNoAllocations(t *testing.T) {
	for _, rules := range []string{"", testRules} {
		book, keys := rulesBook(t, rules)
		d := newFilterDevice(discardTUN{}, filter.New(nil, filter.Options{}), slog.New(slog.DiscardHandler))
		if err := d.setRules(book, keys[0].Public(), DefaultRegistryPort); err != nil {
			t.Fatal(err)
		}
		bufs := batchOf(
			tcpPacket("10.42.0.2", 40000, "10.42.0.1", 22, ackFlag),
			tcpPacket("10.42.0.2", 40000, "10.42.0.1", 80, ackFlag),
			tcpPacket("10.42.0.4", 40000, "10.42.0.1", 22, synFlag),
			udpPacket("10.42.0.3", 40000, "10.42.0.1", 8000),
		)
		out := make([][]byte, 4)
		for i := range out {
			out[i] = make([]byte, testOffset+1500)
		}
		sizes := make([]int, 4)
		if a := testing.AllocsPerRun(100, func() {
			d.Write(bufs, testOffset)
			d.Read(out, sizes, testOffset)
		}); a != 0 {
			t.Errorf("with rules %v: %.1f allocations per batch", rules != "", a)
		}
	}
}

// discardTUN takes everything and reads out one TCP segment from srv.
type discardTUN struct{}

var srvSegment = tcpPacket("10.42.0.1", 22, "10.42.0.2", 40000, ackFlag)

func (discardTUN) File() *os.File                          { return nil }
func (discardTUN) MTU() (int, error)                       { return 1420, nil }
func (discardTUN) Name() (string, error)                   { return "discard", nil }
func (discardTUN) Events() <-chan tun.Event                { return nil }
func (discardTUN) BatchSize() int                          { return 128 }
func (discardTUN) Close() error                            { return nil }
func (discardTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (discardTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	sizes[0] = copy(bufs[0][offset:], srvSegment)
	return 1, nil
}

// BenchmarkFilterDeviceWrite: one batch of 128 TCP segments of allowed
// flows through the wrapper, with no rules and with 100, against the bare
// device.
func BenchmarkFilterDeviceWrite(b *testing.B) {
	var extra strings.Builder
	for i := range 99 {
		fmt.Fprintf(&extra, "\n[[rule]]\nfrom = [\"ci\"]\nto = [\"srv\"]\nports = [\"tcp:%d\", \"udp:%d\"]\n", 10000+i, 20000+i)
	}
	pkts := make([][]byte, 128)
	for i := range pkts {
		pkts[i] = tcpPacket("10.42.0.2", uint16(40000+i%8), "10.42.0.1", 22, ackFlag)
	}
	bufs := batchOf(pkts...)
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		var dev tun.Device = discardTUN{}
		for b.Loop() {
			dev.Write(bufs, testOffset)
		}
	})
	for _, c := range []struct {
		name, rules string
	}{{"rules=0", ""}, {"rules=100", testRules[:strings.Index(testRules, "\n[[rule]]\nfrom = [\"ci\"]")] + extra.String()}} {
		book, keys := rulesBook(b, c.rules)
		d := newFilterDevice(discardTUN{}, filter.New(nil, filter.Options{}), slog.New(slog.DiscardHandler))
		if err := d.setRules(book, keys[0].Public(), DefaultRegistryPort); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d.Write(bufs, testOffset)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(bufs)), "ns/packet")
		})
	}
}
