package testutil

import (
	"os"
	"testing"
	"time"
)

// DevZero skips the test where there is no /dev/zero, the endless file
// that a read without a limit never finishes.
func DevZero(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero here")
	}
	return "/dev/zero"
}

// Within returns what f returns, failing the test with what when f has
// not returned after wait: a read of a FIFO or /dev/zero that the code
// under test does not refuse never returns.
func Within[T any](t testing.TB, wait time.Duration, what string, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v
	case <-time.After(wait):
		t.Fatalf("%s: still running after %v", what, wait)
		panic("unreachable")
	}
}
