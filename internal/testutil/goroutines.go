// Package testutil holds helpers that the tests of several packages share.
// Only tests import it.
package testutil

import (
	"runtime"
	"testing"
	"time"
)

// WaitGoroutines fails the test if the number of goroutines does not come
// back to base within 10 s: wireguard-go, gVisor and the servers stop
// theirs asynchronously after Close. The failure prints every stack.
func WaitGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d after close, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
