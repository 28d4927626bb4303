//go:build unix

package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FIFO makes a FIFO at path, skipping the test where the system cannot.
// A read that the code under test leaves stuck in open(2) is let go when
// the test ends (a writer opens the FIFO), so its goroutine ends too.
func FIFO(t testing.TB, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	t.Cleanup(func() {
		// Without a reader waiting this fails with ENXIO: nothing is stuck.
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
}

// RefuseFIFO runs each reader as a subtest on a FIFO of its own and fails
// unless it returns within 5 s an error saying that the path "is not a
// regular file (a FIFO)": opening a FIFO blocks until a writer comes, so a
// reader that opens it first hangs where no signal handler can end it.
func RefuseFIFO(t *testing.T, readers map[string]func(path string) error) {
	t.Helper()
	for name, read := range readers {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fifo")
			FIFO(t, path)
			err := Within(t, 5*time.Second, name+" on a FIFO", func() error { return read(path) })
			if want := path + " is not a regular file (a FIFO)"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: got %v, want an error containing %q", name, err, want)
			}
		})
	}
}
