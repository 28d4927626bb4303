// Package fileutil holds the file helpers wgmesh shares, one per job.
// Reads trust nothing that sits at the path: a FIFO, a device such as
// /dev/zero or a huge file is refused with an error naming the file,
// instead of hanging or filling memory. Writes are atomic.
package fileutil

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ReadFileLimit reads the regular file at path, which may be reached
// through a symlink, of at most max bytes. A file that is not regular (a
// FIFO, a device, a directory) or is larger than max is refused; a
// missing file's error wraps fs.ErrNotExist.
func ReadFileLimit(path string, max int64) ([]byte, error) {
	return readFile(path, max, false, nil)
}

// ReadPrivateFile is ReadFileLimit for a file of secrets (a private key,
// passwords). Like ssh it refuses one that group or others can read or
// write: when the file's permission bits allow that, tooOpen makes the
// error, which is returned as it is (saying how to fix it), and nothing is
// read; a nil error from tooOpen lets the file be read after all. Any
// other error is wrapped as "what: error".
func ReadPrivateFile(path string, max int64, what string, tooOpen func(perm fs.FileMode) error) ([]byte, error) {
	var permErr error
	data, err := readFile(path, max, false, func(fi fs.FileInfo) error {
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			permErr = tooOpen(perm)
		}
		return permErr
	})
	if permErr != nil {
		return nil, permErr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return data, nil
}

// ReadFileLimitNoFollow is ReadFileLimit for files wgmesh keeps itself
// (its state): a symlink at path is refused too.
func ReadFileLimitNoFollow(path string, max int64) ([]byte, error) {
	return readFile(path, max, true, nil)
}

func readFile(path string, max int64, noFollow bool, check func(fs.FileInfo) error) ([]byte, error) {
	if noFollow {
		// Lstat gives the clear message; O_NOFOLLOW (unix) closes the
		// race with a symlink put in place after it.
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s is a symlink; refusing to follow it (remove it)", path)
		}
	}
	// Opening a FIFO for reading blocks until a writer comes, so open
	// without blocking and look at what was opened before reading.
	f, err := os.OpenFile(path, openFlags(noFollow), 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, kind(fi.Mode()))
	}
	if check != nil {
		if err := check(fi); err != nil {
			return nil, err
		}
	}
	if fi.Size() > max {
		return nil, tooLarge(path, max)
	}
	var buf bytes.Buffer
	// The file may grow between Stat and the read: read one byte past the
	// limit to tell.
	if _, err := buf.ReadFrom(io.LimitReader(f, max+1)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(buf.Len()) > max {
		return nil, tooLarge(path, max)
	}
	return buf.Bytes(), nil
}

func tooLarge(path string, max int64) error {
	return fmt.Errorf("%s is larger than the limit of %d bytes", path, max)
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "mode " + m.String()
}
