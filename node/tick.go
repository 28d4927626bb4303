package node

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// The tick. The loop (run, see loop.go) runs the node's periodic work:
// paths every pathTick, registry discovery every discoverTick, DDNS every
// resolveTick and the start-up greeting rounds at their offsets. Whatever
// is due at one wake-up shares one read of the device (readDeviceState),
// and none is taken when nothing due needs one. Each consumer keeps its
// own schedule, as its own loop had it; they start together, so at the
// default 1 s periods the node reads its device once a second however many
// consumers there are.
//
// The read itself runs in a worker, not on the loop: formatting and
// parsing 10,000 peers takes tens of milliseconds, in which a reload or an
// answer would otherwise wait. The worker posts the read back as a
// deviceEvent, and the loop runs the consumers on it. No timer is armed
// while a read is out, so ticks never overlap and missed periods are
// dropped, as a time.Ticker drops ticks.
//
// Registry and DNS lookups can take seconds; they run in one worker each
// and post their results back to the loop as events. A consumer whose
// worker is still busy skips its turn, as a ticker-driven loop whose body
// runs long did.
//
// After the paths are evaluated the tick publishes the status snapshot
// (n.snap) from the same device read: Status and the registry's answers
// read it without waiting for the loop. Applying a book or an endpoint
// publishes a fresh snapshot at once.

// discoverTick is how often members are checked for a registry lookup.
const discoverTick = time.Second

// tickSchedule is the loop's schedule and its workers. Only the loop uses
// it, except the busy flags, which the workers clear.
type tickSchedule struct {
	start                                time.Time
	resolveEvery                         time.Duration
	nextPaths, nextDiscover, nextResolve time.Time
	nextGreet                            time.Time
	round                                int
	greeting                             bool
	reading                              bool // a device read is out
	discoverBusy, resolveBusy            atomic.Bool
	readWork, discoverWork, resolveWork  chan func()
}

// next is when the next consumer is due.
func (s *tickSchedule) next() time.Time {
	next := s.nextPaths
	for _, t := range []time.Time{s.nextDiscover, s.nextResolve} {
		if t.Before(next) {
			next = t
		}
	}
	if s.greeting && s.nextGreet.Before(next) {
		next = s.nextGreet
	}
	return next
}

// run is the loop: it handles events and ticks until ctx ends. start is
// when the node came up.
func (n *Node) run(ctx context.Context, start time.Time) {
	s := &tickSchedule{
		start:        start,
		resolveEvery: n.resolveTick(),
		greeting:     true,
		readWork:     make(chan func(), 1),
		discoverWork: make(chan func(), 1),
		resolveWork:  make(chan func(), 1),
	}
	s.nextPaths = start.Add(pathTick)
	s.nextDiscover = start.Add(discoverTick)
	s.nextResolve = start.Add(s.resolveEvery)
	s.nextGreet = start.Add(greetRounds[0] + rand.N(greetJitter))
	worker := func(work <-chan func(), busy *atomic.Bool) {
		defer n.loops.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-work:
				f()
				if busy != nil {
					busy.Store(false)
				}
			}
		}
	}
	n.loops.Add(3)
	go worker(s.readWork, nil)
	go worker(s.discoverWork, &s.discoverBusy)
	go worker(s.resolveWork, &s.resolveBusy)

	clk := n.clk()
	for {
		var timer clockTimer
		var fire <-chan time.Time
		if !s.reading {
			timer = clk.NewTimer(s.next().Sub(clk.Now()))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case ev := <-n.events:
			if timer != nil {
				timer.Stop()
			}
			ev.handle(n)
			continue
		case <-fire:
		}
		n.startTick(ctx, s, clk.Now())
	}
}

// startTick decides what is due at now and, when a consumer due needs the
// device, hands its read to the read worker. Runs on the loop.
func (n *Node) startTick(ctx context.Context, s *tickSchedule, now time.Time) {
	var due tickDue
	due.paths = !now.Before(s.nextPaths)
	due.discover = !now.Before(s.nextDiscover) && !s.discoverBusy.Load()
	due.resolve = !now.Before(s.nextResolve) && !s.resolveBusy.Load()
	due.greet = -1
	if s.greeting && !now.Before(s.nextGreet) {
		due.greet = s.round
	}
	// Missed periods are dropped, as a time.Ticker drops ticks.
	s.nextPaths = advance(s.nextPaths, pathTick, now)
	s.nextDiscover = advance(s.nextDiscover, discoverTick, now)
	s.nextResolve = advance(s.nextResolve, s.resolveEvery, now)

	t := &deviceEvent{sched: s, ctx: ctx, now: now, due: due}
	if n.dev == nil || n.book == nil {
		t.finish(n, tickResult{})
		return
	}
	if due.discover {
		t.targets = n.registryTargets()
		t.due.discover = len(t.targets) > 0
	}
	if due.resolve {
		t.lookups = n.dueLookupsLocked(now)
	}
	// The device is read only when a consumer due now needs it.
	if !(t.due.paths || t.due.discover || len(t.lookups) > 0 || t.due.greet >= 0) {
		t.finish(n, tickResult{})
		return
	}
	hint := 0
	if snap := n.snap.Load(); snap != nil && snap.dev != nil {
		hint = len(snap.dev.peers)
	}
	wg := n.dev
	s.reading = true
	s.readWork <- func() {
		t.dev, t.err = readDeviceState(wg, hint)
		n.post(t)
	}
}

// deviceEvent is a tick's device read, posted back by the read worker
// with what the tick found due.
type deviceEvent struct {
	sched   *tickSchedule
	ctx     context.Context
	now     time.Time
	due     tickDue
	targets []registryTarget
	lookups []dueLookup
	dev     *deviceState
	err     error
}

func (t *deviceEvent) handle(n *Node) {
	t.sched.reading = false
	if t.err != nil || n.dev == nil || n.book == nil {
		t.finish(n, tickResult{greetPending: t.err != nil})
		return
	}
	t.finish(n, n.tick(t.ctx, t.now, t.due, t.targets, t.lookups, t.dev))
}

// finish moves the greeting rounds on and hands the lookups a tick found
// due to their workers. Runs on the loop.
func (t *deviceEvent) finish(n *Node, res tickResult) {
	s := t.sched
	if t.due.greet >= 0 {
		s.round++
		if !res.greetPending || s.round == len(greetRounds) {
			s.greeting = false
		} else {
			s.nextGreet = s.start.Add(greetRounds[s.round] + rand.N(greetJitter))
		}
	}
	if res.discover != nil {
		s.discoverBusy.Store(true)
		s.discoverWork <- res.discover
	}
	if res.resolve != nil {
		s.resolveBusy.Store(true)
		s.resolveWork <- res.resolve
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

// tickDue says what one wake-up of the loop runs; greet is the greeting
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

// tick runs the consumers due at now on dev, the tick's device read.
// Runs on the loop.
func (n *Node) tick(ctx context.Context, now time.Time, due tickDue, targets []registryTarget, lookups []dueLookup, dev *deviceState) tickResult {
	var res tickResult
	if due.paths {
		n.updatePathsLocked(dev, now)
		n.lazyTickLocked(dev, now) // members quiet for a while leave the device
		n.publishStatusLocked(dev)
	}
	if due.discover {
		n.lanAnnounceLocked(ctx, targets, now)
		if jobs := n.discoverJobsLocked(dev, now); len(jobs) > 0 {
			res.discover = func() { n.discover(ctx, targets, jobs) }
		}
	}
	if len(lookups) > 0 {
		n.markFreshLocked(lookups, dev, now)
		res.resolve = func() { n.reresolve(ctx, lookups) }
	}
	if due.greet >= 0 {
		var greet []peerbook.Key
		greet, res.greetPending = n.greetRoundLocked(due.greet, dev)
		// A retry keeps WireGuard's count of attempts, so a member that
		// never answers is not given a fresh 90 s of retries by every
		// round.
		n.greetInBackground(ctx, greet, due.greet > 0)
	}
	return res
}
