// Package procs sizes the Go scheduler to the process's load: one P while
// wgmesh uses less than a core, the runtime's default once it needs more or
// its goroutines queue for the one P.
//
// Every packet through a userspace WireGuard member crosses several
// goroutines (the device's reader, the encryption workers, the sender, the
// receiver, and in netstack mode gVisor's TCP processor and a forward's
// copy). With more than one P, each hand-off of a lightly loaded process
// wakes an idle thread to run the readied goroutine (a futex wake, a
// context switch, often a spinning thread that finds nothing) instead of
// running it next on the same thread. On a small machine that is most of a
// round trip: on 2 vCPUs a netstack member with GOMAXPROCS=1 answered a
// 1-byte ping-pong 10-35 % sooner and spent 10-15 % less CPU per GB
// (bench/README.md). But one P cannot encrypt faster than one core, so
// under load the process gets all of them back within one interval.
package procs

import (
	"context"
	"runtime"
	"time"
)

// Governor switches GOMAXPROCS between 1 and the runtime's default by the
// CPU time the process used in each interval.
type Governor struct {
	// Interval between looks at the CPU time; zero means 100 ms, short
	// enough that a burst of traffic waits at most that long for more
	// cores.
	Interval time.Duration
	// Up is the load (in cores) at one P that restores the default; zero
	// means 0.75: the one P is busy enough that goroutines queue.
	Up float64
	// Down is the load (in cores) under which the default gives way to
	// one P, when it stays under for two intervals running; zero means
	// 0.5.
	Down float64
	// Queued restores the default at one P under a load of at least
	// Down when the 90th percentile of the time goroutines waited to run
	// reaches it; zero means 100 µs. A bulk stream through a netstack
	// member keeps one P 40-75 % busy, below Up, with goroutines waiting
	// 0.2-8 ms to run while the machine's other core idles; a 1-byte
	// ping-pong loads it as much (30-60 %) with waits of 6-30 µs: the load
	// alone cannot tell the two apart, the queue can.
	Queued time.Duration

	// cpu returns the CPU time the process has used; set returns the
	// number of Ps after setting 1 (n == 1) or the default (n == 0).
	// Tests replace them.
	cpu func() (time.Duration, bool)
	// queued returns the 90th percentile of the scheduling waits since
	// its last call.
	queued func() time.Duration
	set    func(n int) int
	now    func() time.Time
	// boosts are Boost's requests; nil means the package's.
	boosts <-chan time.Duration
}

// boosts carries Boost's requests to the running governor. A request that
// finds one waiting is covered by it.
var boosts = make(chan time.Duration, 1)

// Boost asks the running governor, if any, for all Ps at once and keeps
// them for at least d: for work known to be heavy before the CPU clock
// can show it, such as applying a big book while `wgmesh status` is
// asked; at one P the two would share it until the next interval (the
// slowest status during a 10,000-member apply went from ~45 to 120-180
// ms). Without a governor it does nothing.
func Boost(d time.Duration) {
	select {
	case boosts <- d:
	default:
	}
}

// Run adjusts GOMAXPROCS until ctx is done, then restores the runtime's
// default. It returns at once where the process has one P anyway or its
// CPU time cannot be read. The caller should not run it when the user set
// GOMAXPROCS.
func (g *Governor) Run(ctx context.Context) {
	g.defaults()
	if _, ok := g.cpu(); !ok {
		return
	}
	procs := g.set(0)
	if procs <= 1 {
		return
	}
	defer g.set(0)
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	used, _ := g.cpu()
	at := g.now()
	low := 0
	var hold time.Time // no drop to one P before
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-g.boosts:
			if procs == 1 {
				procs = g.set(0)
			}
			low, hold = 0, g.now().Add(d)
			continue
		case <-t.C:
		}
		u, ok := g.cpu()
		n := g.now()
		if !ok || !n.After(at) {
			continue
		}
		load := float64(u-used) / float64(n.Sub(at))
		used, at = u, n
		waited := g.queued()
		if n.Before(hold) {
			continue
		}
		procs, low = g.step(procs, low, load, waited)
	}
}

// step returns the Ps and the count of low intervals after an interval
// with the given load and 90th percentile of scheduling waits.
func (g *Governor) step(procs, low int, load float64, waited time.Duration) (int, int) {
	switch {
	case procs == 1:
		if load >= g.Up || load >= g.Down && waited >= g.Queued {
			return g.set(0), 0
		}
		return 1, 0
	case load < g.Down:
		if low+1 >= 2 {
			return g.set(1), 0
		}
		return procs, low + 1
	}
	return procs, 0
}

func (g *Governor) defaults() {
	if g.Interval <= 0 {
		g.Interval = 100 * time.Millisecond
	}
	if g.Up <= 0 {
		g.Up = 0.75
	}
	if g.Down <= 0 {
		g.Down = 0.5
	}
	if g.Queued <= 0 {
		g.Queued = 100 * time.Microsecond
	}
	if g.queued == nil {
		g.queued = newQueueWatch().p90
	}
	if g.cpu == nil {
		g.cpu = processCPU
	}
	if g.set == nil {
		g.set = setProcs
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.boosts == nil {
		g.boosts = boosts
	}
}

// setProcs sets one P (n == 1) or the runtime's default, which follows the
// CPU count and a container's CPU limit as they change, and returns the
// number of Ps.
func setProcs(n int) int {
	if n == 1 {
		runtime.GOMAXPROCS(1)
		return 1
	}
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(0)
}
