//go:build unix

package peerbook

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO at a file's path used to block the open until a writer came, so
// a start-up hung where no signal handler could end it.
func TestFilesRefuseFIFO(t *testing.T) {
	for name, read := range map[string]func(string) error{
		"Load":        func(p string) error { _, err := Load(p); return err },
		"ReadKeyFile": func(p string) error { _, err := ReadKeyFile(p); return err },
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- read(path) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), path+" is not a regular file (a FIFO)") {
					t.Fatalf("got %v, want the FIFO refused by name", err)
				}
			case <-time.After(5 * time.Second):
				if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close() // let the stuck open return
				}
				t.Fatalf("%s hangs on a FIFO", name)
			}
		})
	}
}
