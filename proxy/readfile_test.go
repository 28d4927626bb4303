//go:build unix

package proxy

import (
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// A FIFO at a file's path used to block the open until a writer came, so
// a start-up hung where no signal handler could end it.
func TestFilesRefuseFIFO(t *testing.T) {
	testutil.RefuseFIFO(t, map[string]func(string) error{
		"LoadCredentials": func(p string) error { _, err := LoadCredentials(p); return err },
	})
}
