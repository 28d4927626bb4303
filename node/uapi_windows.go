package node

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens the UAPI named pipe of ifname, as wireguard-go does on
// Windows (\\.\pipe\ProtectedPrefix\Administrators\WireGuard\IFNAME).
func uapiListen(ifname string) (net.Listener, error) {
	ln, err := ipc.UAPIListen(ifname)
	if err != nil {
		return nil, fmt.Errorf("node: listen on UAPI pipe for %s: %w", ifname, err)
	}
	return ln, nil
}
