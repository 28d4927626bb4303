package procs

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestStep(t *testing.T) {
	var calls []int
	g := &Governor{set: func(n int) int {
		calls = append(calls, n)
		if n == 1 {
			return 1
		}
		return 4
	}}
	g.defaults()
	for _, c := range []struct {
		name             string
		procs, low       int
		load             float64
		waited           time.Duration
		wantProcs, wantL int
		wantSet          []int
	}{
		{"busy at default stays", 4, 0, 1.7, 0, 4, 0, nil},
		{"one quiet interval waits", 4, 0, 0.2, 0, 4, 1, nil},
		{"two quiet intervals drop to one", 4, 1, 0.2, 0, 1, 0, []int{1}},
		{"a busy interval resets the count", 4, 1, 0.6, 0, 4, 0, nil},
		{"light load at one stays", 1, 0, 0.6, 0, 1, 0, nil},
		{"heavy load at one restores the default", 1, 0, 0.8, 0, 4, 0, []int{0}},
		// A ping-pong: as busy as a bulk stream, but nothing queues.
		{"short waits at one stay", 1, 0, 0.6, 30 * time.Microsecond, 1, 0, nil},
		{"goroutines queued at one restore the default", 1, 0, 0.6, 2 * time.Millisecond, 4, 0, []int{0}},
		{"queued under a light load stays", 1, 0, 0.3, 2 * time.Millisecond, 1, 0, nil},
		{"queued at default stays", 4, 0, 0.6, 2 * time.Millisecond, 4, 0, nil},
	} {
		calls = nil
		p, l := g.step(c.procs, c.low, c.load, c.waited)
		if p != c.wantProcs || l != c.wantL || len(calls) != len(c.wantSet) || (len(calls) > 0 && calls[0] != c.wantSet[0]) {
			t.Errorf("%s: step(%d, %d, %.1f, %v) = %d, %d with sets %v; want %d, %d with %v",
				c.name, c.procs, c.low, c.load, c.waited, p, l, calls, c.wantProcs, c.wantL, c.wantSet)
		}
	}
}

// fakeProcess is a process whose CPU use per interval follows a script
// and whose Ps the governor sets.
type fakeProcess struct {
	mu     sync.Mutex
	loads  []float64 // cores in each interval; the last repeats
	cpu    time.Duration
	now    time.Time
	sets   chan int
	looked int
}

func (f *fakeProcess) governor() *Governor {
	return &Governor{
		Interval: time.Millisecond,
		cpu: func() (time.Duration, bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			// Each look but the first ends an interval of 100 ms.
			if f.looked > 0 {
				load := f.loads[min(f.looked-1, len(f.loads)-1)]
				f.cpu += time.Duration(load * float64(100*time.Millisecond))
			}
			f.looked++
			return f.cpu, true
		},
		now: func() time.Time {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.now = f.now.Add(100 * time.Millisecond) // once per look, after cpu
			return f.now
		},
		queued: func() time.Duration { return 0 },
		set: func(n int) int {
			f.sets <- n
			if n == 1 {
				return 1
			}
			return 2
		},
	}
}

func (f *fakeProcess) wantSet(t *testing.T, want int) {
	t.Helper()
	select {
	case n := <-f.sets:
		if n != want {
			t.Fatalf("set(%d), want set(%d)", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no set(%d) within 10 s", want)
	}
}

// The governor drops to one P when the process idles, takes every P back
// under load, and restores the default when it stops.
func TestRunFollowsLoad(t *testing.T) {
	f := &fakeProcess{loads: []float64{0.1, 0.1, 0.1, 0.8}, sets: make(chan int, 16), now: time.Unix(0, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.governor().Run(ctx) }()
	f.wantSet(t, 0) // start: the runtime's default
	f.wantSet(t, 1) // two quiet intervals
	f.wantSet(t, 0) // load
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	f.wantSet(t, 0) // restored on the way out
}

// A process with one P, or one whose CPU time is unknown, is left alone.
func TestRunLeavesAlone(t *testing.T) {
	g := &Governor{set: func(int) int { return 1 }, cpu: func() (time.Duration, bool) { return 0, true }}
	g.Interval = time.Millisecond
	ran := make(chan struct{})
	go func() { defer close(ran); g.Run(context.Background()) }()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run with one P did not return")
	}
	set := false
	g = &Governor{set: func(int) int { set = true; return 2 }, cpu: func() (time.Duration, bool) { return 0, false }}
	g.Run(context.Background())
	if set {
		t.Error("Run changed GOMAXPROCS without a CPU clock")
	}
}

// A boost takes every P back at once from one, without waiting for the
// CPU clock, and no quiet interval drops to one P while it holds.
func TestRunBoost(t *testing.T) {
	f := &fakeProcess{loads: []float64{0.1}, sets: make(chan int, 16), now: time.Unix(0, 0)}
	g := f.governor()
	b := make(chan time.Duration, 1)
	g.boosts = b
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	f.wantSet(t, 0) // start
	f.wantSet(t, 1) // quiet: one P
	// Each look moves the fake clock 100 ms: 2 s of hold is 20 quiet
	// intervals without a drop.
	looks := func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.looked }
	b <- 2 * time.Second
	f.wantSet(t, 0)
	boosted := looks()
	// The drop comes only once the hold has run out.
	f.wantSet(t, 1)
	if n := looks() - boosted; n < 19 {
		t.Fatalf("dropped to one P %d looks (%d ms) after a 2 s boost", n, n*100)
	}
}

// The watch reports the waits of goroutines that really queued: with one
// P and a goroutine that holds it, the ones it readies wait about as long
// as it spins.
func TestQueueWatch(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	w := newQueueWatch()
	w.p90() // start from now
	const hold = 2 * time.Millisecond
	var wg sync.WaitGroup
	for range 10 {
		ready := make(chan struct{})
		for range 8 {
			wg.Go(func() { <-ready })
		}
		time.Sleep(time.Millisecond) // the waiters park
		wg.Go(func() {
			close(ready) // readies all eight while this one runs on
			for start := time.Now(); time.Since(start) < hold; {
			}
		})
		wg.Wait()
	}
	if got := w.p90(); got < hold/2 {
		t.Errorf("p90 of waits behind a goroutine holding the only P for %v: %v", hold, got)
	}
	time.Sleep(10 * time.Millisecond)
	if got := w.p90(); got >= hold/2 {
		t.Errorf("p90 after a quiet 10 ms: %v, want the waits since the last call only", got)
	}
}
