package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/hostnet"
	"github.com/wgmesh/wgmesh/peerbook"
)

// defaultInterfaceName is the TUN name used when Config.InterfaceName is
// empty; macOS only accepts utun names and "utun" picks the next free one.
func defaultInterfaceName() string {
	if runtime.GOOS == "darwin" {
		return "utun"
	}
	return "wgmesh0"
}

// createTUN makes the kernel interface, with errors that say what to do.
func createTUN(name string, mtu int) (tun.Device, string, error) {
	if runtime.GOOS == "windows" {
		// wireguard-go's Windows TUN needs wintun.dll and hostnet has no
		// Windows implementation of addresses and routes.
		return nil, "", errors.New("node: TUN mode is not supported on windows; use --mode netstack")
	}
	if runtime.GOOS == "linux" && hostnet.InterfaceExists(name) {
		return nil, "", fmt.Errorf("node: interface %s already exists; choose another --interface or remove it (ip link del %s)", name, name)
	}
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, "", tunCreateError(name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, "", fmt.Errorf("node: TUN interface name: %w", err)
	}
	return dev, real, nil
}

// tunCreateError says what to do about err from creating TUN interface name.
func tunCreateError(name string, err error) error {
	switch {
	case errors.Is(err, syscall.EACCES):
		// Opening the clone device failed on its file mode, which
		// CAP_NET_ADMIN does not override (EPERM is the capability check).
		return fmt.Errorf("node: creating TUN interface %s: cannot open /dev/net/tun: %w; it is normally mode 0666 (crw-rw-rw-): check ls -l /dev/net/tun, run as root, or use --mode netstack", name, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("node: creating TUN interface %s needs root or CAP_NET_ADMIN: %w; run as root, or use --mode netstack, which needs no privileges", name, err)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("node: no TUN device (/dev/net/tun is missing: %w); load the tun module, pass the device into the container, or use --mode netstack", err)
	}
	return fmt.Errorf("node: create TUN interface %s: %w", name, err)
}

// hostSetup is what the operating system must do for this node's
// interface under book.
func (n *Node) hostSetup(ifname string, book *peerbook.Book, self *peerbook.Peer) hostnet.Setup {
	s := hostnet.Setup{Interface: ifname, MTU: book.Mesh.MTU, Routes: otherSubnets(book, n.self),
		Subnets: self.Subnets, StateDir: n.cfg.StateDir, Logger: n.log}
	for _, a := range self.Addresses {
		if net, ok := book.NetworkOf(a); ok {
			s.Addresses = append(s.Addresses, netip.PrefixFrom(a, net.Bits()))
		}
	}
	if n.cfg.Masquerade {
		s.Masquerade = book.Mesh.Networks
	}
	return s
}

// otherSubnets are the LANs routed by members other than self.
func otherSubnets(book *peerbook.Book, self peerbook.Key) []netip.Prefix {
	var out []netip.Prefix
	for i := range book.Peers {
		if book.Peers[i].PublicKey != self {
			out = append(out, book.Peers[i].Subnets...)
		}
	}
	return out
}

// serveUAPI opens wireguard-go's UAPI socket for the interface, with the
// same path and permissions as wireguard-go, so `wg show NAME` and wgctrl
// tools work against wgmesh; idle members are listed too (uapi_idle.go).
// Runs on the loop.
func (n *Node) serveUAPI(ifname string) error {
	ln, err := uapiListen(ifname)
	if err != nil {
		return err
	}
	n.uapi = ln
	dev, lazy := n.dev, n.lazy
	idle := func() *lazyView {
		if lazy == nil {
			return nil
		}
		return lazy.view.Load()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Not dev.IpcHandle: wg show lists idle members too.
			go handleUAPI(c, dev, idle)
		}
	}()
	return nil
}

// hostListenAddr picks the local address for Listen in TUN mode: the
// node's own mesh address, so a listener is reachable from the mesh only.
// The address alone does not do it (Linux accepts packets for a local
// address on any interface): on Linux, hostnet's filter drops traffic to
// the mesh addresses that arrives on another interface than the mesh one
// and lo.
func (n *Node) hostListenAddr(ap netip.AddrPort, want6 bool) netip.AddrPort {
	if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
		return ap
	}
	self, _ := n.Book().PeerByKey(n.self)
	for _, a := range self.Addresses {
		if a.Is6() == want6 {
			return netip.AddrPortFrom(a, ap.Port())
		}
	}
	return netip.AddrPortFrom(self.Addresses[0], ap.Port())
}

var _ net.Listener = (net.Listener)(nil)
