//go:build !windows

package node

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens the UAPI socket of ifname where wireguard-go puts it
// (/var/run/wireguard/IFNAME.sock), with its permissions.
func uapiListen(ifname string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(ifname)
	if err != nil {
		return nil, fmt.Errorf("node: open UAPI socket for %s: %w", ifname, err)
	}
	ln, err := ipc.UAPIListen(ifname, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: listen on UAPI socket for %s: %w", ifname, err)
	}
	return ln, nil
}
