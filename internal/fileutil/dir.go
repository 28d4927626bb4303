package fileutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// PrivateDir makes sure dir is a directory that only this user can
// change: it is created with mode 0700 when missing; an existing one must
// be a real directory (not a symlink), owned by this user and not
// writable by group or others, since whoever can write it can replace
// the files in it. what names the directory in messages ("state
// directory").
func PrivateDir(dir, what string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", what, err)
		}
		// MkdirAll is subject to the umask; make the mode exact.
		return os.Chmod(dir, 0o700)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%s %s is a symlink; give the real directory", what, dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s %s has mode %04o: group or others could replace the files in it; fix with: chmod 700 %s", what, dir, perm, dir)
	}
	if uid, ok := ownerOf(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s %s is owned by uid %d, not by this user (uid %d); use a directory of your own", what, dir, uid, os.Geteuid())
	}
	return nil
}
