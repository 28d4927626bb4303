package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// udpAssociate opens a SOCKS5 control connection to the proxy at addr and
// asks for a UDP association for client, announcing its port as RFC 1928
// asks; it returns the connection and the relay's address.
func udpAssociate(t *testing.T, addr string, client net.PacketConn) (*socksClient, netip.AddrPort) {
	t.Helper()
	ctl, _, err := dialSOCKS(t, addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(client.LocalAddr().(*net.UDPAddr).Port)
	rep, relay, err := ctl.request(cmdUDPAssociate, "0.0.0.0", port)
	if err != nil || rep != repSucceeded {
		t.Fatalf("UDP ASSOCIATE: reply %#x, %v", rep, err)
	}
	return ctl, relay
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaUDPEcho(t)
	s, addr, d := startSOCKS(t, m, nil)

	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctl, relay := udpAssociate(t, addr, client)
	if relay.Addr() != netip.MustParseAddr("127.0.0.1") || relay.Port() == 0 {
		t.Fatalf("relay address %v, want 127.0.0.1:PORT like the TCP listener", relay)
	}

	beta4 := netip.MustParseAddrPort("10.42.0.2:7")
	beta6 := netip.MustParseAddrPort("[fd42:42::2]:7")
	for _, tc := range []struct {
		host string
		src  netip.AddrPort
	}{
		{"beta", beta4},
		{"BETA.mesh", beta4},
		{"10.42.0.2", beta4},
		{"fd42:42::2", beta6},
	} {
		src, data, err := udpRoundTrip(client, relay, tc.host, 7, "dgram to "+tc.host)
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		if src != tc.src || data != "beta:dgram to "+tc.host {
			t.Errorf("%s: reply from %v: %q", tc.host, src, data)
		}
	}

	// Destinations outside the mesh are dropped, not dialed.
	for _, host := range []string{"127.0.0.1", "192.0.2.1", "example.com", "delta"} {
		client.WriteTo(udpRequest(host, 7, "out"), net.UDPAddrFromAddrPort(relay))
	}
	// Only the client may use the relay: another socket of the same host
	// is ignored, so the echo is never asked and nothing comes back.
	intruder, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	intruder.WriteTo(udpRequest("beta", 7, "intruder"), net.UDPAddrFromAddrPort(relay))
	expectSilence(t, client, 500*time.Millisecond)
	expectSilence(t, intruder, 10*time.Millisecond)
	checkOnlyMeshDialed(t, d)

	// Closing the control connection ends the association: its relay
	// socket and mesh sockets are released.
	ctl.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.t.count() != 1 { // the listener only
		if time.Now().After(deadline) {
			t.Fatalf("association not released: %d sockets tracked", s.t.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	client.WriteTo(udpRequest("beta", 7, "late"), net.UDPAddrFromAddrPort(relay))
	expectSilence(t, client, 300*time.Millisecond)
}

func TestSOCKS5UDPAssociateLearnsClientPort(t *testing.T) {
	m := newTestMesh(t)
	m.serveBetaUDPEcho(t)
	_, addr, _ := startSOCKS(t, m, nil)
	ctl, _, err := dialSOCKS(t, addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// 0.0.0.0:0: the client does not know its address yet; the first
	// datagram from the control connection's host fixes it.
	rep, relay, err := ctl.request(cmdUDPAssociate, "0.0.0.0", 0)
	if err != nil || rep != repSucceeded {
		t.Fatalf("UDP ASSOCIATE: reply %#x, %v", rep, err)
	}
	first, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, data, err := udpRoundTrip(first, relay, "beta", 7, "one"); err != nil || data != "beta:one" {
		t.Fatalf("first datagram: %q, %v", data, err)
	}
	second, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.WriteTo(udpRequest("beta", 7, "two"), net.UDPAddrFromAddrPort(relay))
	expectSilence(t, second, 300*time.Millisecond)
	expectSilence(t, first, 10*time.Millisecond)
}
