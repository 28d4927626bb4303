package fileutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestWriteFileAtomicKeepsMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "book.toml")
	if err := WriteFileAtomic(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("new file: mode %v, want 0644", fi.Mode().Perm())
	}
	os.Chmod(path, 0o600)
	if err := WriteFileAtomic(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 || string(data) != "two" {
		t.Errorf("replaced file: mode %v, content %q; want 0600 kept, \"two\"", fi.Mode().Perm(), data)
	}
	// Through a symlink, the target is replaced and the link stays.
	link := filepath.Join(dir, "link.toml")
	os.Symlink(path, link)
	if err := WriteFileAtomic(link, []byte("three"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the symlink was replaced by a file")
	}
	if data, _ := os.ReadFile(path); string(data) != "three" {
		t.Errorf("target holds %q", data)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestWriteFileExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	if err := WriteFileExclusive(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileExclusive(path, []byte("other"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second write: %v, want fs.ErrExist", err)
	}
	data, _ := os.ReadFile(path)
	if fi, _ := os.Stat(path); string(data) != "secret" || fi.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %v", data, fi.Mode().Perm())
	}
}

// TestLockFileSerializes runs read-modify-write cycles that replace the
// file by rename from several goroutines: none may be lost.
func TestLockFileSerializes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counter")
	os.WriteFile(path, []byte{0}, 0o644)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := LockFile(path, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer unlock()
			data, _ := os.ReadFile(path)
			time.Sleep(time.Millisecond)
			if err := WriteFileAtomic(path, []byte{data[0] + 1}, 0o644); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if data, _ := os.ReadFile(path); data[0] != n {
		t.Errorf("counter is %d after %d locked increments", data[0], n)
	}
	// A held lock times out with a message.
	unlock, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := LockFile(path, 50*time.Millisecond); err == nil {
		t.Error("a second lock was granted while the first is held")
	}
}
