//go:build unix

package fileutil

import (
	"os"
	"syscall"
)

// openFlags opens without blocking on a FIFO; regular files ignore
// O_NONBLOCK.
func openFlags(noFollow bool) int {
	fl := os.O_RDONLY | syscall.O_NONBLOCK
	if noFollow {
		fl |= syscall.O_NOFOLLOW
	}
	return fl
}

func ownerOf(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// ownerGroupOf is the file's owner and group, which an atomic write keeps.
func ownerGroupOf(fi os.FileInfo) (int, int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
