package node

import (
	"net"
	"net/netip"
	"testing"
)

// In TUN mode Dial goes through the host's kernel, which delivers
// loopback, the unspecified address and the host's own addresses to the
// host itself: tunTarget refuses them, except this node's mesh addresses,
// and lets mesh and LAN destinations through.
func TestTUNTargetRefusesHostAddresses(t *testing.T) {
	book, keys := testBook(t, 2)
	self := keys[0].Public()
	refused := []string{"127.0.0.1", "127.9.8.7", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ia := range addrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && !ip.IsLoopback() {
				refused = append(refused, ip.Unmap().String())
				if ip.Unmap().Is4() { // the same address, IPv4-mapped
					refused = append(refused, netip.AddrFrom16(ip.Unmap().As16()).String())
				}
			}
		}
	}
	for _, s := range refused {
		if err := tunTarget(book, self, netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s: allowed, want refused", s)
		}
	}
	for _, s := range []string{"10.42.0.1", "fd42:42::1", "10.42.0.2", "192.0.2.7", "2001:db8::7"} {
		if err := tunTarget(book, self, netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v, want allowed", s, err)
		}
	}
}
