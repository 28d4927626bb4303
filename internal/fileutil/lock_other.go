//go:build !unix

package fileutil

import (
	"fmt"
	"runtime"
	"time"
)

// LockFile is not implemented here (no flock); the commands that edit a
// book in place say so instead of editing it without a lock.
func LockFile(path string, _ time.Duration) (unlock func(), err error) {
	return nil, fmt.Errorf("cannot lock %s: changing a book in place is not supported on %s; run it on Linux, macOS or FreeBSD", path, runtime.GOOS)
}
