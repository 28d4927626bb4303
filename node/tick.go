package node

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// The tick. One goroutine (tickLoop) runs the node's periodic work: paths
// every pathTick, registry discovery every discoverTick, DDNS every
// resolveTick and the start-up greeting rounds at their offsets. Whatever
// is due at one wake-up shares one read of the device (readDeviceState),
// taken without n.mu, and none is taken when nothing due needs one. Each
// consumer keeps its own schedule, as its own loop had it; they start
// together, so at the default 1 s periods the node reads its device once a
// second however many consumers there are.
//
// Registry and DNS lookups can take seconds; they run in one worker each
// (discoverWorker, resolveWorker) and post their results back under n.mu.
// A consumer whose worker is still busy skips its turn, as a ticker-driven
// loop whose body runs long did.
//
// After the paths are evaluated the tick publishes the status snapshot
// (n.snap) from the same device read: Status and the registry's answers
// read it without the lock, so they never wait for a reload. Handshake
// ages, endpoints and counters in Status are therefore up to one tick old;
// applying a book or an endpoint publishes a fresh snapshot at once.

// discoverTick is how often members are checked for a registry lookup.
const discoverTick = time.Second

// tickLoop runs until ctx ends. start is when the node came up.
func (n *Node) tickLoop(ctx context.Context, start time.Time) {
	var discoverBusy, resolveBusy atomic.Bool
	discoverWork := make(chan func(), 1)
	resolveWork := make(chan func(), 1)
	worker := func(work <-chan func(), busy *atomic.Bool) {
		defer n.loops.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-work:
				f()
				busy.Store(false)
			}
		}
	}
	n.loops.Add(2)
	go worker(discoverWork, &discoverBusy)
	go worker(resolveWork, &resolveBusy)

	resolveEvery := n.resolveTick()
	nextPaths := start.Add(pathTick)
	nextDiscover := start.Add(discoverTick)
	nextResolve := start.Add(resolveEvery)
	round := 0
	nextGreet := start.Add(greetRounds[0] + rand.N(greetJitter))
	greeting := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		next := nextPaths
		for _, t := range []time.Time{nextDiscover, nextResolve} {
			if t.Before(next) {
				next = t
			}
		}
		if greeting && nextGreet.Before(next) {
			next = nextGreet
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		var due tickDue
		due.paths = !now.Before(nextPaths)
		due.discover = !now.Before(nextDiscover) && !discoverBusy.Load()
		due.resolve = !now.Before(nextResolve) && !resolveBusy.Load()
		due.greet = -1
		if greeting && !now.Before(nextGreet) {
			due.greet = round
		}
		// Missed periods are dropped, as a time.Ticker drops ticks.
		nextPaths = advance(nextPaths, pathTick, now)
		nextDiscover = advance(nextDiscover, discoverTick, now)
		nextResolve = advance(nextResolve, resolveEvery, now)

		res := n.tick(ctx, now, due)
		if due.greet >= 0 {
			round++
			if !res.greetPending || round == len(greetRounds) {
				greeting = false
			} else {
				nextGreet = start.Add(greetRounds[round] + rand.N(greetJitter))
			}
		}
		if res.discover != nil {
			discoverBusy.Store(true)
			discoverWork <- res.discover
		}
		if res.resolve != nil {
			resolveBusy.Store(true)
			resolveWork <- res.resolve
		}
	}
}

// advance returns the next time after t of a period, never in the past.
func advance(t time.Time, period time.Duration, now time.Time) time.Time {
	if now.Before(t) {
		return t
	}
	t = t.Add(period)
	if !t.After(now) {
		t = now.Add(period)
	}
	return t
}

// tickDue says what one wake-up of tickLoop runs; greet is the greeting
// round due, or -1.
type tickDue struct {
	paths, discover, resolve bool
	greet                    int
}

// tickResult is what a tick hands back: lookups for the workers and
// whether greetings are still pending.
type tickResult struct {
	discover, resolve func()
	greetPending      bool
}

// tick runs the consumers due at now on one device read.
func (n *Node) tick(ctx context.Context, now time.Time, due tickDue) tickResult {
	var res tickResult
	n.mu.Lock()
	wg, book := n.dev, n.book
	if wg == nil || book == nil {
		n.mu.Unlock()
		return res
	}
	var targets []registryTarget
	if due.discover {
		targets = n.registryTargets()
		due.discover = len(targets) > 0
	}
	var lookups []dueLookup
	if due.resolve {
		lookups = n.dueLookupsLocked(now)
	}
	// The device is read only when a consumer due now needs it.
	need := due.paths || due.discover || len(lookups) > 0 || due.greet >= 0
	hint := 0
	if s := n.snap.Load(); s != nil && s.dev != nil {
		hint = len(s.dev.peers)
	}
	n.mu.Unlock()
	if !need {
		return res
	}
	// No lock while the device formats and the text is parsed: Reload,
	// Dial and the rest go on meanwhile. The loops end before the device
	// closes.
	dev, err := readDeviceState(wg, hint)
	if err != nil {
		res.greetPending = true
		return res
	}

	n.mu.Lock()
	if n.dev != wg || n.book == nil {
		n.mu.Unlock()
		return res
	}
	if due.paths {
		n.updatePathsLocked(dev, now)
		n.lazyTickLocked(dev, now) // members quiet for a while leave the device
		n.publishStatusLocked(dev)
	}
	if due.discover {
		if jobs := n.discoverJobsLocked(dev, now); len(jobs) > 0 {
			res.discover = func() { n.discover(ctx, targets, jobs) }
		}
	}
	if len(lookups) > 0 {
		n.markFreshLocked(lookups, dev, now)
		res.resolve = func() { n.reresolve(ctx, lookups) }
	}
	var greet []peerbook.Key
	if due.greet >= 0 {
		greet, res.greetPending = n.greetRoundLocked(due.greet, dev)
	}
	n.mu.Unlock()
	// A retry keeps WireGuard's count of attempts, so a member that never
	// answers is not given a fresh 90 s of retries by every round.
	sendGreetings(wg, greet, due.greet > 0)
	return res
}
