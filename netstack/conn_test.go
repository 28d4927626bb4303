package netstack

import (
	"net"
	"net/netip"
	"testing"
)

// TestListenUnspecifiedBindsOwnAddresses: ":PORT" listens on each of the
// stack's own addresses on one port (an ephemeral one picked once), never
// on a wildcard; ListenUDP takes the first own address of the family.
func TestListenUnspecifiedBindsOwnAddresses(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("fd99::2")
	s, err := New([]netip.Addr{v6, v4}, 1420, Options{SubnetRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	ln, err := s.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, ok := ln.(*multiListener)
	if !ok || len(m.lns) != 2 {
		t.Fatalf("listener %T, want one on each of the two addresses", ln)
	}
	port := m.lns[0].Addr().(*net.TCPAddr).Port
	for i, want := range []netip.Addr{v4, v6} {
		got := m.lns[i].Addr().(*net.TCPAddr).AddrPort()
		if got.Addr().Unmap() != want || int(got.Port()) != port || port == 0 {
			t.Errorf("listener %d on %v, want %v:%d", i, got, want, port)
		}
	}
	ln4, err := s.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	if got := ln4.Addr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != v4 {
		t.Errorf("0.0.0.0 listened on %v, want %v", got, v4)
	}

	for unspec, want := range map[netip.Addr]netip.Addr{{}: v4, netip.IPv4Unspecified(): v4, netip.IPv6Unspecified(): v6} {
		pc, err := s.ListenUDP(netip.AddrPortFrom(unspec, 0))
		if err != nil {
			t.Fatal(err)
		}
		if got := pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(); got != want {
			t.Errorf("udp on %v bound %v, want %v", unspec, got, want)
		}
		pc.Close()
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
}
