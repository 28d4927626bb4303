//go:build unix

package peerbook

import (
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// A FIFO at a file's path used to block the open until a writer came, so
// a start-up hung where no signal handler could end it.
func TestFilesRefuseFIFO(t *testing.T) {
	testutil.RefuseFIFO(t, map[string]func(string) error{
		"Load":        func(p string) error { _, err := Load(p); return err },
		"ReadKeyFile": func(p string) error { _, err := ReadKeyFile(p); return err },
	})
}
