//go:build unix

package fileutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFileLimit(small, 5); err != nil || string(b) != "12345" {
		t.Fatalf("at the limit: %q, %v", b, err)
	}
	_, err := ReadFileLimit(small, 4)
	if err == nil || !strings.Contains(err.Error(), small) || !strings.Contains(err.Error(), "limit of 4 bytes") {
		t.Fatalf("over the limit: %v, want an error naming the file and the limit", err)
	}
	if _, err := ReadFileLimit(filepath.Join(dir, "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := ReadFileLimit(dir, 10); err == nil || !strings.Contains(err.Error(), "not a regular file (a directory)") {
		t.Fatalf("directory: %v", err)
	}
}

func TestReadFileLimitDevZero(t *testing.T) {
	zero := testutil.DevZero(t)
	err := testutil.Within(t, 10*time.Second, "reading /dev/zero", func() error { _, err := ReadFileLimit(zero, 1<<40); return err })
	if err == nil || !strings.Contains(err.Error(), "/dev/zero is not a regular file (a character device)") {
		t.Fatalf("got %v", err)
	}
}

// A FIFO would block the open until a writer comes.
func TestReadFileLimitFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial")
	testutil.FIFO(t, path)
	err := testutil.Within(t, 10*time.Second, "reading a FIFO", func() error { _, err := ReadFileLimitNoFollow(path, 100); return err })
	if err == nil || !strings.Contains(err.Error(), "not a regular file (a FIFO)") {
		t.Fatalf("got %v", err)
	}
}

func TestReadFileLimitSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFileLimit(link, 10); err != nil || string(b) != "x" {
		t.Fatalf("ReadFileLimit follows symlinks (a ConfigMap's book is one): %q, %v", b, err)
	}
	if _, err := ReadFileLimitNoFollow(link, 10); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("ReadFileLimitNoFollow of a symlink: %v", err)
	}
}

func TestReadPrivateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	var asked []fs.FileMode
	tooOpen := func(perm fs.FileMode) error {
		asked = append(asked, perm)
		return fmt.Errorf("%s is too open (%04o)", path, perm)
	}
	if b, err := ReadPrivateFile(path, 100, "secret file", tooOpen); err != nil || string(b) != "s3cret" || len(asked) != 0 {
		t.Fatalf("0600: %q, %v, tooOpen asked for %v", b, err, asked)
	}
	for _, perm := range []fs.FileMode{0o640, 0o604, 0o620} {
		if err := os.Chmod(path, perm); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s is too open (%04o)", path, perm)
		if b, err := ReadPrivateFile(path, 100, "secret file", tooOpen); err == nil || err.Error() != want || b != nil {
			t.Errorf("%04o: %q, %v; want tooOpen's error as it is", perm, b, err)
		}
	}
	allow := func(fs.FileMode) error { return nil }
	if b, err := ReadPrivateFile(path, 100, "secret file", allow); err != nil || string(b) != "s3cret" {
		t.Errorf("tooOpen allowing it: %q, %v", b, err)
	}
	_, err := ReadPrivateFile(filepath.Join(dir, "missing"), 100, "secret file", tooOpen)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "secret file: ") {
		t.Errorf("missing file: %v, want fs.ErrNotExist wrapped as \"secret file: ...\"", err)
	}
}

func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "state")
	if err := PrivateDir(fresh, "state directory"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created with %v, %v; want mode 0700", fi.Mode(), err)
	}
	if err := PrivateDir(fresh, "state directory"); err != nil {
		t.Fatalf("existing private dir: %v", err)
	}

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(open, "state directory"); err == nil || !strings.Contains(err.Error(), "mode 0777") || !strings.Contains(err.Error(), "chmod 700 "+open) {
		t.Fatalf("0777 dir: %v", err)
	}
	if err := os.Chmod(open, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(open, "state directory"); err != nil {
		t.Fatalf("group-readable dir is fine: %v", err)
	}

	link := filepath.Join(base, "link")
	if err := os.Symlink(fresh, link); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(link, "state directory"); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("symlink: %v", err)
	}

	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(file, "state directory"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("file: %v", err)
	}
}

func TestPrivateDirOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(dir, "state directory"); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("dir of another user: %v", err)
	}
}
