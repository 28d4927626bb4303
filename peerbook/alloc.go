package peerbook

import (
	"fmt"
	"net/netip"
)

// NextFreeAddr returns the lowest host address of network n that no member
// of b uses, skipping n's network address and (IPv4) broadcast address, so
// that addresses freed by removed members are reused first. It fails when
// every host address of n is taken.
func NextFreeAddr(b *Book, n netip.Prefix) (netip.Addr, error) {
	n = n.Masked()
	used := make(map[netip.Addr]bool)
	for i := range b.Peers {
		for _, a := range b.Peers[i].Addresses {
			if n.Contains(a) {
				used[a] = true
			}
		}
	}
	// At most len(used)+2 candidates are taken or reserved before a free
	// one, so the loop is bounded by the book, not by the network's size.
	for a := n.Addr(); a.IsValid() && n.Contains(a); a = a.Next() {
		if used[a] || isNetworkAddr(a, n) || isBroadcastAddr(a, n) {
			continue
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("mesh network %s is full: all of its %s host addresses are used; add a network to the book or remove a member", n, hostCount(n))
}

// hostCount describes how many member addresses n holds, for messages.
func hostCount(n netip.Prefix) string {
	hostBits := n.Addr().BitLen() - n.Bits()
	if hostBits > 62 {
		return fmt.Sprintf("2^%d", hostBits)
	}
	c := uint64(1) << hostBits
	if hostBits >= 2 {
		c-- // the network address
		if n.Addr().Is4() {
			c-- // the broadcast address
		}
	}
	return fmt.Sprint(c)
}
