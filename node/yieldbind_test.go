package node

import (
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

// scriptBind's one receive function returns the next count of packets in
// counts (an error once they run out), calling before first.
type scriptBind struct {
	conn.Bind
	counts []int
	before func()
}

func (b *scriptBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	fn := func(packets [][]byte, sizes []int, _ []conn.Endpoint) (int, error) {
		if b.before != nil {
			b.before()
		}
		if len(b.counts) == 0 {
			return 0, net.ErrClosed
		}
		n := b.counts[0]
		b.counts = b.counts[1:]
		for i := range n {
			sizes[i] = len(packets[i])
		}
		return n, nil
	}
	return []conn.ReceiveFunc{fn}, 51820, nil
}

func openOne(t *testing.T, b conn.Bind) conn.ReceiveFunc {
	t.Helper()
	fns, _, err := b.Open(0)
	if err != nil || len(fns) != 1 {
		t.Fatalf("Open: %d functions, %v", len(fns), err)
	}
	return fns[0]
}

// A read yields only after one that returned packets.
func TestYieldBindYieldsAfterPackets(t *testing.T) {
	inner := &scriptBind{counts: []int{3, 0, 0, 2, 1}}
	yields := 0
	var at []int // the read before which each yield came
	reads := 0
	b := newYieldBind(inner)
	b.yield = func() { yields++; at = append(at, reads) }
	fn := openOne(t, b)
	packets, sizes := [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 8)}, make([]int, 3)
	for {
		_, err := fn(packets, sizes, make([]conn.Endpoint, 3))
		reads++
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("error %v, want the inner bind's", err)
			}
			break
		}
	}
	// Reads 0..5 return 3, 0, 0, 2, 1, error: the reads after the 3, the
	// 2 and the 1 yield (before reads 1, 4 and 5).
	if want := []int{1, 4, 5}; len(at) != len(want) || at[0] != 1 || at[1] != 4 || at[2] != 5 {
		t.Fatalf("yields before reads %v, want %v", at, want)
	}
}

// With one P, the goroutine a batch readies runs before the next batch is
// read: without the yield the receive loop reads every batch first.
func TestYieldBindLetsReadiedGoroutinesRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const batches = 200
	counts := make([]int, batches)
	for i := range counts {
		counts[i] = 1
	}
	var handled atomic.Int64
	received, maxLag := 0, 0
	inner := &scriptBind{counts: counts}
	inner.before = func() {
		maxLag = max(maxLag, received-int(handled.Load()))
	}
	fn := openOne(t, newYieldBind(inner))

	work := make(chan struct{}, batches)
	done := make(chan struct{})
	go func() { // the decryption worker
		defer close(done)
		for range work {
			handled.Add(1)
		}
	}()
	packets, sizes, eps := [][]byte{make([]byte, 8)}, make([]int, 1), make([]conn.Endpoint, 1)
	for { // wireguard-go's receive loop
		n, err := fn(packets, sizes, eps)
		if err != nil {
			break
		}
		received += n
		work <- struct{}{}
	}
	close(work)
	<-done
	if maxLag > 1 {
		t.Fatalf("the worker fell %d batches behind the receive loop, want at most 1", maxLag)
	}
}
