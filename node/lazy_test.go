package node

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// fakeLazy is a lazyPeers whose device is a set of keys.
type fakeLazy struct {
	*lazyPeers
	inDevice   map[peerbook.Key]*peerConfig
	configured []peerConfig
}

func newFakeLazy(t *testing.T) *fakeLazy {
	f := &fakeLazy{lazyPeers: newLazyPeers(slog.New(slog.NewTextHandler(io.Discard, nil)), 0, 0), inDevice: map[peerbook.Key]*peerConfig{}}
	f.dev = newLazyDevice(nil, f.wake)
	f.configure = func(pc *peerConfig) error {
		c := *pc
		f.inDevice[pc.key] = &c
		f.configured = append(f.configured, c)
		return nil
	}
	f.remove = func(keys []peerbook.Key) error {
		for _, k := range keys {
			if _, ok := f.inDevice[k]; !ok {
				t.Errorf("removing %s, not in the device", k.Short())
			}
			delete(f.inDevice, k)
		}
		return nil
	}
	return f
}

// snapshot is the device state of the fake device at now, with per-member
// facts from facts.
func (f *fakeLazy) snapshot(now time.Time, facts map[peerbook.Key]devicePeer) *deviceState {
	st := &deviceState{read: now, peers: map[peerbook.Key]*devicePeer{}}
	for k := range f.inDevice {
		d := facts[k]
		st.peers[k] = &d
	}
	return st
}

func testConfigs(t *testing.T, n int) ([]peerbook.Key, map[peerbook.Key]*peerConfig) {
	var keys []peerbook.Key
	want := map[peerbook.Key]*peerConfig{}
	for i := range n {
		k := newKey(t).Public()
		keys = append(keys, k)
		want[k] = &peerConfig{
			name: string(rune('a' + i)), key: k,
			endpoint:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), 51820),
			allowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 32)},
		}
	}
	return keys, want
}

func TestIdlePolicy(t *testing.T) {
	f := newFakeLazy(t)
	keys, want := testConfigs(t, 5)
	for _, k := range keys {
		f.inDevice[k] = want[k]
	}
	silent, talker, quiet, relay, seen := keys[0], keys[1], keys[2], keys[3], keys[4]
	exempt := func(k peerbook.Key) bool { return k == relay }
	t0 := time.Unix(1_000_000, 0)
	facts := map[peerbook.Key]devicePeer{}
	step := func(at time.Duration) []peerbook.Key {
		now := t0.Add(at)
		got := f.observe(f.snapshot(now, facts), now, want, exempt)
		slices.SortFunc(got, func(a, b peerbook.Key) int { return slices.Compare(a[:], b[:]) })
		return got
	}
	if got := step(0); len(got) != 0 {
		t.Fatalf("idle at start: %d", len(got))
	}
	// talker answers and keeps sending; quiet answers once; seen answered
	// before this node's start-up (handshake only).
	facts[talker] = devicePeer{lastHandshake: t0.Add(time.Second), rx: 100}
	facts[quiet] = devicePeer{lastHandshake: t0.Add(time.Second), rx: 92}
	facts[seen] = devicePeer{lastHandshake: t0.Add(time.Second)}
	for s := time.Second; s < lazyUnanswered; s += time.Second {
		d := facts[talker]
		d.rx += 10
		facts[talker] = d
		if got := step(s); len(got) != 0 {
			t.Fatalf("at %v: %d idle before lazyUnanswered", s, len(got))
		}
	}
	// The member that never answered goes idle; the relay never does.
	if got := step(lazyUnanswered); len(got) != 1 || got[0] != silent {
		t.Fatalf("at lazyUnanswered: idle %v, want only the silent member", got)
	}
	if !f.anyIdle() {
		t.Fatal("anyIdle false with an idle member")
	}
	if _, ok := f.inDevice[silent]; ok {
		t.Fatal("idle member still in the device")
	}
	if _, ok := f.view.Load().isIdle(silent); !ok {
		t.Fatal("view does not show the silent member idle")
	}
	// quiet and seen go idle lazyQuiet after they were last heard from
	// (handshake at t0+1s, rx growth first seen at t0+1s); talker, whose
	// rx keeps growing, does not.
	var got []peerbook.Key
	for s := lazyUnanswered + time.Second; s <= lazyQuiet+time.Second; s += time.Second {
		d := facts[talker]
		d.rx += 10
		facts[talker] = d
		if g := step(s); len(g) > 0 {
			if s != lazyQuiet+time.Second {
				t.Fatalf("members idle at %v, before lazyQuiet after last heard", s)
			}
			got = g
		}
	}
	wantIdle := []peerbook.Key{quiet, seen}
	slices.SortFunc(wantIdle, func(a, b peerbook.Key) int { return slices.Compare(a[:], b[:]) })
	if !slices.Equal(got, wantIdle) {
		t.Fatalf("idle after lazyQuiet: %d members, want quiet and seen", len(got))
	}
	if _, ok := f.inDevice[talker]; !ok {
		t.Fatal("the member with traffic went idle")
	}
	if _, ok := f.inDevice[relay]; !ok {
		t.Fatal("an exempt member went idle")
	}
	// Its byte counts and handshake stay in the record.
	rec, _ := f.view.Load().isIdle(quiet)
	if rec.last.rx != 92 || !rec.last.lastHandshake.Equal(t0.Add(time.Second)) {
		t.Fatalf("idle record facts %+v", rec.last)
	}

	// nil exempt: nothing goes idle (this node cannot be reached).
	if g := f.observe(f.snapshot(t0.Add(time.Hour), facts), t0.Add(time.Hour), want, nil); len(g) != 0 {
		t.Fatalf("%d idle with no member allowed to", len(g))
	}
}

func TestIdleWakeAndSync(t *testing.T) {
	f := newFakeLazy(t)
	keys, want := testConfigs(t, 3)
	for _, k := range keys {
		f.inDevice[k] = want[k]
	}
	t0 := time.Unix(1_000_000, 0)
	roamed := netip.MustParseAddrPort("192.0.2.7:4000")
	facts := map[peerbook.Key]devicePeer{keys[1]: {endpoint: roamed, tx: 7}}
	f.observe(f.snapshot(t0, facts), t0, want, func(peerbook.Key) bool { return false })
	at := t0.Add(lazyUnanswered)
	if got := f.observe(f.snapshot(at, facts), at, want, func(peerbook.Key) bool { return false }); len(got) != 3 {
		t.Fatalf("%d idle, want 3", len(got))
	}

	// A packet to keys[0]'s address wakes it through the routes table.
	r := f.dev.routes.Load()
	k, ok := r.lookup(netip.MustParseAddr("10.0.0.1"))
	if !ok || k != keys[0] {
		t.Fatal("routes table does not map the idle member's address")
	}
	if _, ok := r.lookup(netip.MustParseAddr("10.0.0.9")); ok {
		t.Fatal("routes table maps an address of no member")
	}
	f.wake(k)
	if _, ok := f.inDevice[keys[0]]; !ok || len(f.configured) != 1 {
		t.Fatal("wake did not configure the member")
	}
	if _, ok := f.view.Load().isIdle(keys[0]); ok {
		t.Fatal("woken member still shown idle")
	}
	f.wake(k) // not idle any more: nothing happens
	if len(f.configured) != 1 {
		t.Fatal("a second wake configured the member again")
	}

	// A new book changes keys[1]'s allowed IPs and drops keys[2].
	next := map[peerbook.Key]*peerConfig{keys[0]: want[keys[0]]}
	c := *want[keys[1]]
	c.allowedIPs = []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}
	next[keys[1]] = &c
	f.lock()
	f.syncLocked(next)
	f.unlock()
	if _, ok := f.view.Load().isIdle(keys[2]); ok {
		t.Fatal("member dropped from the book still idle")
	}
	if _, ok := f.dev.routes.Load().lookup(netip.MustParseAddr("10.0.0.3")); ok {
		t.Fatal("dropped member still routed")
	}
	k, ok = f.dev.routes.Load().lookup(netip.MustParseAddr("10.0.1.77"))
	if !ok || k != keys[1] {
		t.Fatal("subnet of an idle member not routed to it")
	}
	f.wake(k)
	got := f.configured[len(f.configured)-1]
	if got.key != keys[1] || got.allowedIPs[0] != c.allowedIPs[0] {
		t.Fatal("woken with the old configuration")
	}
	if got.endpoint != roamed {
		t.Fatalf("woken with endpoint %v, want the one the device had roamed to", got.endpoint)
	}

	// After close no wake configures anything.
	f.lock()
	f.syncLocked(want) // keys[2] back in the book, not idle: nothing
	f.unlock()
	f.close()
	n := len(f.configured)
	for _, k := range keys {
		f.wake(k)
	}
	if len(f.configured) != n {
		t.Fatal("wake after close configured a member")
	}
}

func TestStartsIdle(t *testing.T) {
	self := &peerbook.Peer{Name: "self", Endpoint: peerbook.Endpoint{Host: "192.0.2.1", Port: 51820}}
	noEndpoint := &peerbook.Peer{Name: "nat"}
	withEndpoint := &peerbook.Peer{Name: "srv", Endpoint: peerbook.Endpoint{Host: "192.0.2.2", Port: 51820}}
	relay := &peerbook.Peer{Name: "relay", Relay: true}
	book := &peerbook.Book{Peers: []peerbook.Peer{*self, *noEndpoint, *withEndpoint, *relay}}
	ok := startsIdle(book, self)
	for _, c := range []struct {
		p    *peerbook.Peer
		pc   peerConfig
		want bool
	}{
		{noEndpoint, peerConfig{}, true},
		{noEndpoint, peerConfig{endpoint: netip.MustParseAddrPort("192.0.2.9:1")}, false}, // an override or a registry answer
		{withEndpoint, peerConfig{endpoint: netip.MustParseAddrPort("192.0.2.2:51820")}, false},
		{relay, peerConfig{}, false},
	} {
		if got := ok(c.p, &c.pc); got != c.want {
			t.Errorf("%s (endpoint %v): starts idle %v, want %v", c.p.Name, c.pc.endpoint, got, c.want)
		}
	}
	// This node unreachable, or a registry in the book: nobody starts idle.
	if startsIdle(book, noEndpoint)(noEndpoint, &peerConfig{}) {
		t.Error("starts idle although this node has no endpoint")
	}
	withRegistry := &peerbook.Book{Peers: append(book.Peers, peerbook.Peer{Name: "reg", Registry: true})}
	if startsIdle(withRegistry, self)(noEndpoint, &peerConfig{}) {
		t.Error("starts idle although a registry could give it an endpoint")
	}
}

// TestIdleGainsEndpoint: a member that started idle without an endpoint is
// configured as soon as the node learns one for it.
func TestIdleGainsEndpoint(t *testing.T) {
	f := newFakeLazy(t)
	keys, want := testConfigs(t, 1)
	c := *want[keys[0]]
	c.endpoint = netip.AddrPort{}
	f.lock()
	f.addIdleLocked([]*peerConfig{&c})
	f.unlock()
	if _, ok := f.view.Load().isIdle(keys[0]); !ok || !f.anyIdle() {
		t.Fatal("member did not start idle")
	}
	f.lock()
	f.syncLocked(want)
	f.unlock()
	if got, ok := f.inDevice[keys[0]]; !ok || got.endpoint != want[keys[0]].endpoint {
		t.Fatal("member with a new endpoint not configured")
	}
	if f.anyIdle() {
		t.Fatal("still counted idle")
	}
}
