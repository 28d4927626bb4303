//go:build !race

package netstack

import "testing"

// TestGiBByteExact moves 1 GiB through two stacks joined by wireguard-go
// and checks that it arrives byte for byte. The race detector makes it
// take minutes, so it is built only without it; `make test` runs it in a
// second, race-free pass.
func TestGiBByteExact(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer skipped in -short mode")
	}
	for _, v6 := range []bool{false, true} {
		n := int64(1 << 30)
		if v6 {
			n = 64 << 20
		}
		transferExact(t, v6, n)
	}
}
