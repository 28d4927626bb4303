package netstack

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Flow limits of the subnet router, per protocol. A flow holds a host
// socket, a gVisor endpoint and two goroutines (an idle flow 20-26 KiB of
// heap and stacks: BenchmarkSubnetUDPFlow, BenchmarkSubnetTCPFlow), so the
// total bounds the router's sockets and memory, and the per-member cap
// keeps one member from taking all of them.
const (
	maxFlowsPerMember = 1024
	maxFlowsTotal     = 4096
	// refusalLogInterval spaces the log lines about refused flows: one
	// line when refusals start, then at most one per interval with the
	// counts.
	refusalLogInterval = 10 * time.Second
	// maxRefusalKeys bounds the members named in one refusal line; the
	// rest are counted together.
	maxRefusalKeys = 16
)

// flowLimiter counts the flows of one protocol, in all and per member.
type flowLimiter struct {
	perMember, total int

	mu sync.Mutex
	n  int
	by map[string]int
}

func newFlowLimiter(perMember, total int) *flowLimiter {
	return &flowLimiter{perMember: perMember, total: total, by: map[string]int{}}
}

// acquire takes a flow for member, or says which cap refuses it.
func (l *flowLimiter) acquire(member string) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by[member] >= l.perMember {
		return false, "member cap"
	}
	if l.n >= l.total {
		return false, "total cap"
	}
	l.n++
	l.by[member]++
	return true, ""
}

func (l *flowLimiter) release(member string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.by[member]--; l.by[member] <= 0 {
		delete(l.by, member)
	}
}

// members maps a flow's source address to the member it comes from, so
// that a member routing subnets of its own cannot spread its flows over
// many source addresses.
type members struct {
	names    []string
	prefixes [][]netip.Prefix
}

// of names the member whose prefixes hold a, or a itself when none does
// (wireguard-go only delivers sources a member's book entry claims, so
// that happens only before SetMembers).
func (m *members) of(a netip.Addr) string {
	if m != nil {
		for i, ps := range m.prefixes {
			for _, p := range ps {
				if p.Contains(a) {
					return m.names[i]
				}
			}
		}
	}
	return a.String()
}

// has reports whether a belongs to a member (false before SetMembers).
func (m *members) has(a netip.Addr) bool {
	if m == nil {
		return false
	}
	for _, ps := range m.prefixes {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// refusalLog logs refused flows at a bounded rate.
type refusalLog struct {
	log              *slog.Logger
	interval         time.Duration
	perMember, total int // the limits, for the log line

	mu     sync.Mutex
	counts map[string]int // "proto member why" -> refusals
	other  int            // refusals beyond maxRefusalKeys distinct keys
	timer  *time.Timer    // armed while refusals are being counted
	closed bool
	lines  atomic.Int64 // lines logged, for tests
}

func newRefusalLog(log *slog.Logger, interval time.Duration, perMember, total int) *refusalLog {
	return &refusalLog{log: log, interval: interval, perMember: perMember, total: total, counts: map[string]int{}}
}

// refused records one refused flow. The first refusal after a quiet
// interval is logged at once; the ones after it are counted and logged
// together when the interval ends.
func (r *refusalLog) refused(proto, member, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	key := proto + " " + member + " " + why
	if _, ok := r.counts[key]; ok || len(r.counts) < maxRefusalKeys {
		r.counts[key]++
	} else {
		r.other++
	}
	if r.timer == nil {
		r.flushLocked()
		r.timer = time.AfterFunc(r.interval, r.tick)
	}
}

func (r *refusalLog) tick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if len(r.counts) == 0 && r.other == 0 {
		r.timer = nil
		return
	}
	r.flushLocked()
	r.timer.Reset(r.interval)
}

func (r *refusalLog) flushLocked() {
	keys := make([]string, 0, len(r.counts))
	total := r.other
	for k, n := range r.counts {
		keys = append(keys, fmt.Sprintf("%s x%d", k, n))
		total += n
	}
	slices.Sort(keys)
	attrs := []any{"refused", total, "flows", strings.Join(keys, ", "),
		"limit_per_member", r.perMember, "limit_total", r.total}
	if r.other > 0 {
		attrs = append(attrs, "others", r.other)
	}
	r.log.Warn("subnet flows refused: too many flows", attrs...)
	r.lines.Add(1)
	clear(r.counts)
	r.other = 0
}

func (r *refusalLog) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
}
