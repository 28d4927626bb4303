//go:build unix

package booksource

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// signedSetup writes a signed book and returns its path and the options
// of a signed source whose state dir is dir/state (not created).
func signedSetup(t *testing.T) (path string, opts Options) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "book.toml")
	admin := newSigner(t)
	data := makeBook(5, 0)
	writeFile(t, path, data)
	writeFile(t, path+SigSuffix, sign(t, admin, data))
	return path, Options{TrustedSigners: allowedFor(t, "admin", admin), StateDir: filepath.Join(dir, "state"), Logger: testLogger(t)}
}

// startErr starts a signed file source and a URL source (which must fail
// before any request) on opts and returns both errors.
func startErr(t *testing.T, path string, opts Options) (fileErr, urlErr error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, ch, fileErr := WatchFile(ctx, path, nil, opts)
	if fileErr == nil {
		expectClosed(t, cancel, ch)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_, ch, urlErr = PollURL(ctx, "https://127.0.0.1:1/book.toml", time.Hour, opts, HTTPOptions{Timeout: 100 * time.Millisecond})
	if urlErr == nil {
		expectClosed(t, cancel, ch)
	}
	return fileErr, urlErr
}

func TestStateDirRefused(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T, dir string)
		want string
	}{
		{"writable by others", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "has mode 0777: group or others could replace the files in it; fix with: chmod 700 "},
		{"symlink", func(t *testing.T, dir string) {
			real := dir + ".real"
			if err := os.Mkdir(real, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"owned by another user", func(t *testing.T, dir string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a directory to another user")
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "is owned by uid 65534"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, opts := signedSetup(t)
			tc.make(t, opts.StateDir)
			fileErr, urlErr := startErr(t, path, opts)
			for _, err := range []error{fileErr, urlErr} {
				if err == nil || !strings.Contains(err.Error(), "state directory "+opts.StateDir) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v, want an error naming the state directory and %q", err, tc.want)
				}
			}
		})
	}
}

// A FIFO named serial used to block the start-up in open(2), where no
// signal handler could end it.
func TestStateSerialFIFO(t *testing.T) {
	path, opts := signedSetup(t)
	if err := os.Mkdir(opts.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(opts.StateDir, SerialFile)
	testutil.FIFO(t, serial)
	err := testutil.Within(t, wait, "start-up with a FIFO named serial", func() error {
		_, _, err := WatchFile(context.Background(), path, nil, opts)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), serial+" is not a regular file (a FIFO)") {
		t.Fatalf("got %v, want the FIFO refused", err)
	}
}

func TestStateSerialSymlinkRefused(t *testing.T) {
	path, opts := signedSetup(t)
	if err := os.Mkdir(opts.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "serial")
	writeFile(t, other, []byte("1 "+strings.Repeat("00", 32)+"\n"))
	if err := os.Symlink(other, filepath.Join(opts.StateDir, SerialFile)); err != nil {
		t.Fatal(err)
	}
	fileErr, _ := startErr(t, path, opts)
	if fileErr == nil || !strings.Contains(fileErr.Error(), "is a symlink") {
		t.Fatalf("got %v, want the symlinked serial refused", fileErr)
	}
}

func TestStateMissingSerialWarns(t *testing.T) {
	path, opts := signedSetup(t)
	var logs testutil.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	const warning = "no book serial recorded in the state directory"

	start := func() {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		_, ch, err := WatchFile(ctx, path, nil, opts)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		expectClosed(t, cancel, ch)
	}
	start()
	if !strings.Contains(logs.String(), "level=WARN msg=\""+warning) || !strings.Contains(logs.String(), filepath.Join(opts.StateDir, SerialFile)) {
		t.Fatalf("first start without a serial file logged:\n%s\nwant a warning naming the file", logs.String())
	}
	logs = testutil.Buffer{}
	start()
	if strings.Contains(logs.String(), warning) {
		t.Fatalf("second start, serial recorded, still warns:\n%s", logs.String())
	}

	// The file removed behind the node's back: the warning again.
	if err := os.Remove(filepath.Join(opts.StateDir, SerialFile)); err != nil {
		t.Fatal(err)
	}
	logs = testutil.Buffer{}
	start()
	if !strings.Contains(logs.String(), warning) {
		t.Fatalf("start after the serial file was removed logged:\n%s", logs.String())
	}
}
