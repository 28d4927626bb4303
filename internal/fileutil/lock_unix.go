//go:build unix

package fileutil

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile takes an exclusive advisory lock (flock) on the existing file at
// path, for a read-modify-write of it by cooperating processes, and returns
// the function that releases it. Writers replace the file by rename, so the
// lock is taken on the file that is at path once the lock is held: a waiter
// that locked a file since renamed away tries again on the new one. It gives
// up after wait.
func LockFile(path string, wait time.Duration) (unlock func(), err error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
				break
			}
			if time.Now().After(deadline) {
				f.Close()
				return nil, fmt.Errorf("%s is locked by another process (another wgmesh changing it?); gave up after %v", path, wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if sameFile(f, path) {
			return func() { f.Close() }, nil
		}
		f.Close()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s keeps being replaced; gave up locking it after %v", path, wait)
		}
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
