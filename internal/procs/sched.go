package procs

import (
	"runtime/metrics"
	"time"
)

// queueWatch reads how long goroutines waited to run: the runtime's
// histogram of the time each one spent runnable before it ran.
type queueWatch struct {
	sample []metrics.Sample
	prev   []uint64
}

func newQueueWatch() *queueWatch {
	return &queueWatch{sample: []metrics.Sample{{Name: "/sched/latencies:seconds"}}}
}

// p90 returns the 90th percentile of those waits since the last call
// (the upper bound of its bucket), zero if no goroutine was scheduled.
func (w *queueWatch) p90() time.Duration {
	metrics.Read(w.sample)
	if w.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := w.sample[0].Value.Float64Histogram()
	if len(w.prev) != len(h.Counts) {
		w.prev = make([]uint64, len(h.Counts))
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - w.prev[i]
	}
	var seen uint64
	at := time.Duration(0)
	for i, c := range h.Counts {
		seen += c - w.prev[i]
		if total > 0 && seen*10 >= total*9 {
			at = bucketEnd(h.Buckets[i+1])
			break
		}
	}
	copy(w.prev, h.Counts)
	return at
}

// bucketEnd turns a bucket's upper bound in seconds into a duration; the
// last bucket is unbounded.
func bucketEnd(s float64) time.Duration {
	if s > 3600 {
		return time.Hour
	}
	return time.Duration(s * float64(time.Second))
}
