package filter

import (
	"net/netip"
	"sync"
	"time"
)

// Timeouts are how long a tracked flow lives without a packet, by
// protocol and, for TCP, by state. Zero fields take the defaults.
type Timeouts struct {
	// TCPOpening: a SYN was sent, no answer seen yet. Default 60s.
	TCPOpening time.Duration
	// TCPEstablished: the other side answered. Default 2h, the minimum
	// RFC 5382 asks of NATs, so idle SSH sessions survive.
	TCPEstablished time.Duration
	// TCPClosing: a FIN or RST was seen. Default 30s.
	TCPClosing time.Duration
	// UDP flows. Default 3m.
	UDP time.Duration
	// ICMP echo (ping) exchanges. Default 30s.
	ICMP time.Duration
}

// DefaultTimeouts are the timeouts used where Options sets none.
var DefaultTimeouts = Timeouts{
	TCPOpening:     60 * time.Second,
	TCPEstablished: 2 * time.Hour,
	TCPClosing:     30 * time.Second,
	UDP:            3 * time.Minute,
	ICMP:           30 * time.Second,
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts
	if t.TCPOpening > 0 {
		d.TCPOpening = t.TCPOpening
	}
	if t.TCPEstablished > 0 {
		d.TCPEstablished = t.TCPEstablished
	}
	if t.TCPClosing > 0 {
		d.TCPClosing = t.TCPClosing
	}
	if t.UDP > 0 {
		d.UDP = t.UDP
	}
	if t.ICMP > 0 {
		d.ICMP = t.ICMP
	}
	return d
}

// DefaultMaxFlows is the conntrack size where Options sets none.
const DefaultMaxFlows = 65536

// shards splits the table so that the two directions of different flows,
// handled by different goroutines of wireguard-go, rarely share a lock.
const shards = 16

// ctKey identifies a flow from self's side: local is the address in the
// mesh or in self's subnets that started it, remote the member's side.
// ICMP echo keeps its identifier in lport (rport is 0).
type ctKey struct {
	local, remote [16]byte
	lport, rport  uint16
	proto         uint8
}

// flow states
const (
	stOpening uint8 = iota // TCP: SYN sent
	stOpen                 // TCP answered; UDP and ICMP always
	stClosing              // TCP: FIN or RST seen
)

type ctEntry struct {
	expires int64 // clock nanoseconds
	state   uint8
}

type ctShard struct {
	mu sync.Mutex
	m  map[ctKey]ctEntry
	_  [40]byte // keep shards on their own cache lines
}

type conntrack struct {
	shards   [shards]ctShard
	perShard int
	t        Timeouts
	now      func() time.Time
	base     time.Time
}

func newConntrack(maxFlows int, t Timeouts, now func() time.Time) *conntrack {
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	if now == nil {
		now = time.Now
	}
	c := &conntrack{perShard: max(1, maxFlows/shards), t: t.withDefaults(), now: now, base: now()}
	for i := range c.shards {
		c.shards[i].m = make(map[ctKey]ctEntry)
	}
	return c
}

func (c *conntrack) clock() int64 { return int64(c.now().Sub(c.base)) }

func keyOf(local, remote netip.Addr, lport, rport uint16, proto uint8) ctKey {
	return ctKey{local: local.As16(), remote: remote.As16(), lport: lport, rport: rport, proto: proto}
}

func (k *ctKey) shard() int {
	h := uint32(k.lport)*31 + uint32(k.rport)
	h ^= uint32(k.remote[15]) | uint32(k.remote[14])<<8 | uint32(k.local[15])<<16
	h ^= h >> 7
	return int(h % shards)
}

func (c *conntrack) timeout(proto, state uint8) int64 {
	switch {
	case proto != protoTCP && proto != protoUDP:
		return int64(c.t.ICMP)
	case proto == protoUDP:
		return int64(c.t.UDP)
	case state == stOpening:
		return int64(c.t.TCPOpening)
	case state == stClosing:
		return int64(c.t.TCPClosing)
	}
	return int64(c.t.TCPEstablished)
}

// track records or refreshes a flow that self started, in state st (a
// closing entry that sees a new SYN opens again).
func (c *conntrack) track(k ctKey, st uint8) {
	now := c.clock()
	s := &c.shards[k.shard()]
	s.mu.Lock()
	e, ok := s.m[k]
	if ok && e.expires > now && !(e.state == stClosing && st == stOpening) {
		st = e.state
	} else if !ok && len(s.m) >= c.perShard {
		s.evict(now)
	}
	s.m[k] = ctEntry{expires: now + c.timeout(k.proto, st), state: st}
	s.mu.Unlock()
}

// evict makes room: expired entries among the first few the map yields
// (in random order) go, or else the first of them. A flood of new flows
// then costs O(1) per flow, and the table never exceeds its size.
func (s *ctShard) evict(now int64) {
	n, freed := 0, false
	var first ctKey
	for k, e := range s.m {
		if n == 0 {
			first = k
		}
		if e.expires <= now {
			delete(s.m, k)
			freed = true
		}
		if n++; n == 8 {
			break
		}
	}
	if !freed {
		delete(s.m, first)
	}
}

// seen looks a flow up and, when it is tracked, applies the TCP flags of
// a packet of it (outbound or inbound) and refreshes it.
func (c *conntrack) seen(k ctKey, tcpFlags uint8, inbound bool) bool {
	now := c.clock()
	s := &c.shards[k.shard()]
	s.mu.Lock()
	e, ok := s.m[k]
	if ok && e.expires <= now {
		delete(s.m, k)
		ok = false
	}
	if ok {
		if k.proto == protoTCP {
			switch {
			case tcpFlags&(tcpFIN|tcpRST) != 0:
				e.state = stClosing
			case inbound && e.state == stOpening && tcpFlags&tcpACK != 0:
				e.state = stOpen
			}
		}
		e.expires = now + c.timeout(k.proto, e.state)
		s.m[k] = e
	}
	s.mu.Unlock()
	return ok
}

// has reports whether a flow is tracked, without refreshing it.
func (c *conntrack) has(k ctKey) bool {
	now := c.clock()
	s := &c.shards[k.shard()]
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	return ok && e.expires > now
}

// keep drops every entry for which keep returns false, and expired ones.
func (c *conntrack) keep(keep func(k *ctKey) bool) {
	now := c.clock()
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.expires <= now || !keep(&k) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// len counts the entries, expired ones included.
func (c *conntrack) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
