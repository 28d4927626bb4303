//go:build !unix

package fileutil

import "os"

// openFlags: no FIFO to block on here, and symlinks are caught by Lstat.
func openFlags(bool) int { return os.O_RDONLY }

// ownerOf cannot tell the owner here; the mode check still applies.
func ownerOf(os.FileInfo) (int, bool) { return 0, false }

// ownerGroupOf: no numeric owners here; a replaced file gets the new one's.
func ownerGroupOf(os.FileInfo) (int, int, bool) { return 0, 0, false }
