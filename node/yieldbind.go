package node

import (
	"runtime"

	"golang.zx2c4.com/wireguard/conn"
)

// yieldBind wraps the node's conn.Bind so that a receive function that
// has just returned packets lets the goroutines they readied run before
// it reads the socket again.
//
// wireguard-go's receive goroutine calls its ReceiveFunc in a loop and
// only parks when the socket is empty. Each batch it reads readies the
// decryption worker and the peer's sequential receiver, but with one P
// (a small container, the procs governor's one P, a member pinned to a
// CPU) the readied goroutines wait in the run queue until the loop has
// drained everything the peer sent. Then all of it is decrypted, then
// delivered, and only then do the ACKs (or replies) it caused go out. The
// sender, out of window, waits meanwhile; so the two members took turns
// instead of working at once: a bulk stream between two netstack members
// pinned to a CPU each left both CPUs a third idle. Yielding once per
// batch lets each batch go through decryption, delivery and the ACK path
// before the next is read; the cost is one trip through the scheduler per
// batch of up to conn.IdealBatchSize packets.
type yieldBind struct {
	conn.Bind
	// yield is runtime.Gosched; tests count the calls.
	yield func()
}

func newYieldBind(b conn.Bind) *yieldBind { return &yieldBind{Bind: b, yield: runtime.Gosched} }

// Open wraps every receive function of the inner bind.
func (b *yieldBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return openWrapped(b.Bind, port, b.receive)
}

// receive yields before a read that follows one that returned packets.
// wireguard-go calls each receive function from one goroutine of its own,
// so got needs no lock.
func (b *yieldBind) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	got := false
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if got {
			b.yield()
		}
		n, err := fn(packets, sizes, eps)
		got = n > 0
		return n, err
	}
}
