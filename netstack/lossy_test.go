package netstack

import (
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"
)

// lossyDevice emulates a long, lossy path where tc netem is not available:
// packets written to the stack are dropped with probability loss and the
// rest delivered after delay, in order, by one goroutine.
type lossyDevice struct {
	*Stack
	delay time.Duration
	loss  float64
	mu    sync.Mutex
	q     []lossyPacket
	wake  chan struct{}
}

type lossyPacket struct {
	due time.Time
	b   []byte
}

// pathFromEnv reads WGMESH_BENCH_DELAY (a duration, one way) and
// WGMESH_BENCH_LOSS (a fraction) for the benchmarks.
func pathFromEnv() (time.Duration, float64) {
	d, _ := time.ParseDuration(os.Getenv("WGMESH_BENCH_DELAY"))
	l, _ := strconv.ParseFloat(os.Getenv("WGMESH_BENCH_LOSS"), 64)
	return d, l
}

func newLossy(s *Stack, delay time.Duration, loss float64) *lossyDevice {
	d := &lossyDevice{Stack: s, delay: delay, loss: loss, wake: make(chan struct{}, 1)}
	go d.run()
	return d
}

func (d *lossyDevice) Write(bufs [][]byte, offset int) (int, error) {
	now := time.Now()
	d.mu.Lock()
	for _, b := range bufs {
		if rand.Float64() < d.loss {
			continue
		}
		d.q = append(d.q, lossyPacket{now.Add(d.delay), append([]byte(nil), b[offset:]...)})
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return len(bufs), nil
}

func (d *lossyDevice) run() {
	var batch [][]byte
	for d.ctx.Err() == nil {
		d.mu.Lock()
		batch = batch[:0]
		var next time.Duration = time.Hour
		now := time.Now()
		i := 0
		for ; i < len(d.q) && len(batch) < 128; i++ {
			if d.q[i].due.After(now) {
				next = d.q[i].due.Sub(now)
				break
			}
			batch = append(batch, d.q[i].b)
		}
		d.q = d.q[i:]
		d.mu.Unlock()
		if len(batch) > 0 {
			d.Stack.Write(batch, 0)
			continue
		}
		select {
		case <-d.wake:
		case <-time.After(next):
		case <-d.ctx.Done():
		}
	}
}
