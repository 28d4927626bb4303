package node

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgmesh/wgmesh/peerbook"
)

// memNet is an in-memory UDP network on 127.0.0.1 for node tests, after
// wireguard-go's conn/bindtest: every node's device gets a memBind instead
// of a socket, and a packet to a port no bind holds is lost, as UDP to a
// host that swallows everything would be. No packet leaves the process.
type memNet struct {
	mu    sync.Mutex
	binds map[uint16]*memBind
	next  uint16
}

func newMemNet() *memNet { return &memNet{binds: map[uint16]*memBind{}, next: 40000} }

var memHost = netip.MustParseAddr("127.0.0.1")

// hole returns an address on the network that no bind will ever hold.
func (m *memNet) hole() netip.AddrPort { return netip.AddrPortFrom(memHost, 1) }

func (m *memNet) bind() *memBind { return &memBind{net: m} }

type memPacket struct {
	b    []byte
	from netip.AddrPort
}

// memBind is one device's conn.Bind on a memNet.
type memBind struct {
	net    *memNet
	mu     sync.Mutex
	port   uint16
	rx     chan memPacket
	closed chan struct{}
}

var _ conn.Bind = (*memBind)(nil)

// memEndpoint is an address on a memNet.
type memEndpoint netip.AddrPort

func (e memEndpoint) ClearSrc()           {}
func (e memEndpoint) SrcToString() string { return "" }
func (e memEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e memEndpoint) DstToBytes() []byte {
	b, _ := netip.AddrPort(e).MarshalBinary()
	return b
}
func (e memEndpoint) DstIP() netip.Addr { return netip.AddrPort(e).Addr() }
func (e memEndpoint) SrcIP() netip.Addr { return netip.Addr{} }

func (b *memBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	m := b.net
	m.mu.Lock()
	if port == 0 {
		for m.binds[m.next] != nil {
			m.next++
		}
		port = m.next
		m.next++
	} else if m.binds[port] != nil {
		m.mu.Unlock()
		return nil, 0, errors.New("address already in use")
	}
	m.binds[port] = b
	m.mu.Unlock()
	b.port = port
	rx, closed := make(chan memPacket, 1024), make(chan struct{})
	b.rx, b.closed = rx, closed
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case <-closed:
			return 0, net.ErrClosed
		case p := <-rx:
			sizes[0] = copy(bufs[0], p.b)
			eps[0] = memEndpoint(p.from)
			return 1, nil
		}
	}
	return []conn.ReceiveFunc{recv}, port, nil
}

func (b *memBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed == nil {
		return nil
	}
	close(b.closed)
	b.closed = nil
	b.net.mu.Lock()
	if b.net.binds[b.port] == b {
		delete(b.net.binds, b.port)
	}
	b.net.mu.Unlock()
	return nil
}

func (b *memBind) SetMark(uint32) error { return nil }
func (b *memBind) BatchSize() int       { return 1 }

func (b *memBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return memEndpoint(ap), nil
}

func (b *memBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	from, open := netip.AddrPortFrom(memHost, b.port), b.closed != nil
	b.mu.Unlock()
	if !open {
		return net.ErrClosed
	}
	me, ok := ep.(memEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	to := netip.AddrPort(me)
	if to.Addr() != memHost {
		return nil // nobody there
	}
	b.net.mu.Lock()
	dst := b.net.binds[to.Port()]
	b.net.mu.Unlock()
	if dst == nil {
		return nil
	}
	dst.mu.Lock()
	rx := dst.rx
	dst.mu.Unlock()
	for _, buf := range bufs {
		select {
		case rx <- memPacket{b: slices.Clone(buf), from: from}:
		default: // a full queue drops, as a socket buffer would
		}
	}
	return nil
}

// fakeClock is a clock that moves only when the test says so. Advance
// fires each timer that falls due and waits until the node's loop, which
// took it, has finished that tick and armed its next timer: after Advance
// returns, everything due by then has run, in order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	armed  chan struct{}
}

type fakeTimer struct {
	c       chan time.Time
	at      time.Time
	stopped chan struct{}
	once    sync.Once
	clk     *fakeClock
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now(), armed: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) clockTimer {
	c.mu.Lock()
	t := &fakeTimer{c: make(chan time.Time), at: c.now.Add(d), stopped: make(chan struct{}), clk: c}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() {
	t.once.Do(func() {
		close(t.stopped)
		t.clk.mu.Lock()
		t.clk.timers = slices.DeleteFunc(t.clk.timers, func(x *fakeTimer) bool { return x == t })
		t.clk.mu.Unlock()
	})
}

// Advance moves the clock d on, running every tick due meanwhile.
func (c *fakeClock) Advance(tb testing.TB, d time.Duration) {
	tb.Helper()
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due *fakeTimer
		for _, t := range c.timers {
			if !t.at.After(target) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		if due.at.After(c.now) {
			c.now = due.at
		}
		now := c.now
		c.timers = slices.DeleteFunc(c.timers, func(x *fakeTimer) bool { return x == due })
		c.mu.Unlock()
		select {
		case <-c.armed:
		default:
		}
		select {
		case due.c <- now:
		case <-due.stopped:
			continue // the loop took an event instead and re-armed
		case <-time.After(10 * time.Second):
			tb.Fatal("fake clock: no loop took a due timer within 10s")
		}
		select {
		case <-c.armed:
		case <-time.After(10 * time.Second):
			tb.Fatal("fake clock: the loop did not finish its tick within 10s")
		}
	}
}

// fakeMesh starts nodes for keys on one memNet, each with its own fake
// clock, as startNodes does on sockets and real time.
type fakeMesh struct {
	net    *memNet
	nodes  []*Node
	clocks []*fakeClock
}

func startFakeNodes(t testing.TB, book *peerbook.Book, keys []peerbook.PrivateKey, conf func(int, *Config), prepare func(*Node)) *fakeMesh {
	t.Helper()
	m := &fakeMesh{net: newMemNet()}
	m.nodes = startNodes(t, book, keys, conf, func(n *Node) {
		c := newFakeClock()
		n.hooks = testHooks{bind: m.net.bind(), clock: c}
		m.clocks = append(m.clocks, c)
		// wireguard-go keeps real time: its handshakes take real seconds
		// while minutes of fake time pass, so the idle windows, judged in
		// fake time, would idle members that are merely slow. A test of
		// lazy peers on the fake clock sets its own windows in prepare.
		n.lazyQuietAfter, n.lazyUnansweredAfter = 1000*time.Hour, 1000*time.Hour
		// The same holds for the watch on members being sent to: their
		// answers come in real time, so here it never finds one dead.
		n.deadAfter = 1000 * time.Hour
		if prepare != nil {
			prepare(n)
		}
	})
	// Time may move only once every loop waits for its first tick.
	for _, c := range m.clocks {
		c.waitArmed(t)
	}
	return m
}

// waitArmed waits until a loop has armed a timer on c.
func (c *fakeClock) waitArmed(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		armed := len(c.timers) > 0
		c.mu.Unlock()
		if armed {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("fake clock: the node's loop armed no timer within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// advance moves every node's clock d on, in steps of at most step, so the
// nodes' ticks interleave as they would in real time.
func (m *fakeMesh) advance(t testing.TB, d, step time.Duration) {
	t.Helper()
	for d > 0 {
		s := min(step, d)
		for _, c := range m.clocks {
			c.Advance(t, s)
		}
		d -= s
	}
}

// waitPath advances the mesh's clocks one pathTick at a time until n's path
// to name is want or limit of fake time has passed. wireguard-go keeps real
// time: it sends no initiation within its 5 s rekey timeout of the last, a
// probe included. So a path that waits for a new handshake needs real
// time too, and fake time passes at realPerTick meanwhile.
const realPerTick = 200 * time.Millisecond

func (m *fakeMesh) waitPath(t *testing.T, n *Node, name, want string, limit time.Duration) {
	t.Helper()
	for waited := time.Duration(0); pathTo(n, name) != want; waited += pathTick {
		if waited > limit {
			t.Fatalf("%s's path to %s is %q, want %q within %v of fake time", n.Status().Name, name, pathTo(n, name), want, limit)
		}
		m.advance(t, pathTick, pathTick)
		time.Sleep(realPerTick)
	}
}
