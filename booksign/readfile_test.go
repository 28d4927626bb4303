//go:build unix

package booksign

import (
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// A FIFO at a file's path used to block the open until a writer came, so
// a start-up hung where no signal handler could end it.
func TestFilesRefuseFIFO(t *testing.T) {
	testutil.RefuseFIFO(t, map[string]func(string) error{
		"LoadAllowedSigners": func(p string) error { _, err := LoadAllowedSigners(p); return err },
		"LoadSigner":         func(p string) error { _, err := LoadSigner(p); return err },
	})
}
