package node

import (
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

// TestTUNCreateError: each way creating the TUN interface fails gets an
// error that says which and what to do.
func TestTUNCreateError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		// open(/dev/net/tun) refused by the file's mode.
		{syscall.EACCES, "cannot open /dev/net/tun"},
		// TUNSETIFF refused for want of CAP_NET_ADMIN.
		{fmt.Errorf("ioctl: %w", syscall.EPERM), "needs root or CAP_NET_ADMIN"},
		{&fs.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.ENOENT}, "/dev/net/tun is missing"},
		{syscall.EBUSY, "create TUN interface wgmesh0"},
	} {
		got := tunCreateError("wgmesh0", c.err).Error()
		if !strings.Contains(got, c.want) || !strings.Contains(got, "netstack") && c.err != syscall.EBUSY {
			t.Errorf("%v: %q, want it to contain %q and name --mode netstack", c.err, got, c.want)
		}
	}
}
