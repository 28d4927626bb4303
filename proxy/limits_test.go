package proxy

import (
	"encoding/base64"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// startLimitedSOCKS serves a SOCKS5 proxy whose limits set has set before
// Serve, logging into the returned buffer.
func startLimitedSOCKS(t *testing.T, set func(*SOCKS5)) (*SOCKS5, string, *testutil.Buffer) {
	t.Helper()
	m := newTestMesh(t)
	m.serveBetaUDPEcho(t)
	logs := &testutil.Buffer{}
	s := &SOCKS5{Dialer: m.alpha(), Book: m.alpha().Book, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	set(s)
	return s, serveSOCKS(t, s), logs
}

func TestSOCKS5ConnectionCap(t *testing.T) {
	if DefaultConnLimits.Total == 0 || DefaultConnLimits.PerClient == 0 {
		t.Fatalf("no default connection limits: %+v", DefaultConnLimits)
	}
	_, addr, logs := startLimitedSOCKS(t, func(s *SOCKS5) { s.Conns = Limits{Total: 2} })
	for range 2 {
		if _, _, err := dialSOCKS(t, addr, "", ""); err != nil {
			t.Fatalf("a client within the cap: %v", err)
		}
	}
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !testutil.ClosedWithin(c, 5*time.Second) {
			t.Fatal("a connection over the cap of 2 was kept open")
		}
	}
	if n := strings.Count(logs.String(), "connection refused"); n != 1 {
		t.Errorf("%d log lines for 4 refusals, want 1:\n%s", n, logs)
	}
}

// TestSOCKS5AssociationCap: a client could open any number of UDP
// associations, each with 256 destinations.
func TestSOCKS5AssociationCap(t *testing.T) {
	if DefaultAssociationLimits.Total == 0 || DefaultAssociationLimits.PerClient == 0 {
		t.Fatalf("no default association limits: %+v", DefaultAssociationLimits)
	}
	s, addr, logs := startLimitedSOCKS(t, func(s *SOCKS5) { s.Associations = Limits{Total: 10, PerClient: 2} })
	associate := func() (*socksClient, byte) {
		t.Helper()
		ctl, _, err := dialSOCKS(t, addr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		rep, _, err := ctl.request(cmdUDPAssociate, "0.0.0.0", 0)
		if err != nil {
			t.Fatalf("UDP ASSOCIATE: %v", err)
		}
		return ctl, rep
	}
	first, rep := associate()
	if rep != repSucceeded {
		t.Fatalf("first association: reply %#x", rep)
	}
	if _, rep := associate(); rep != repSucceeded {
		t.Fatalf("second association: reply %#x", rep)
	}
	for i := range 3 {
		if _, rep := associate(); rep != repGeneralFailure {
			t.Fatalf("association %d of one client over a cap of 2: reply %#x, want %#x", i+3, rep, repGeneralFailure)
		}
	}
	if n := strings.Count(logs.String(), "socks5 udp associate refused"); n != 1 {
		t.Errorf("%d log lines for 3 refusals, want 1:\n%s", n, logs)
	}
	// Ending an association frees its place.
	first.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.assocs.Total() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d associations counted after one of 2 ended", s.assocs.Total())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, rep := associate(); rep != repSucceeded {
		t.Fatalf("association after one ended: reply %#x", rep)
	}
}

// TestSOCKS5DestinationCapAcrossAssociations: the 256 destinations of one
// association were the only bound; several associations together are
// bounded too, and a destination's place is given back when it ends.
func TestSOCKS5DestinationCapAcrossAssociations(t *testing.T) {
	s, addr, logs := startLimitedSOCKS(t, func(s *SOCKS5) {
		s.init()
		s.dests = netutil.NewCounter(netutil.Limits{Total: 3})
	})
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	associate := func() (*socksClient, netip.AddrPort) {
		t.Helper()
		return udpAssociate(t, addr, client)
	}
	// echoes reports whether beta's echo answers through relay within
	// about a second (udpRoundTrip waits 10 s for what must work).
	echoes := func(relay netip.AddrPort, host string) bool {
		t.Helper()
		buf := make([]byte, 2048)
		for range 4 {
			client.WriteTo(udpRequest(host, 7, "hi"), net.UDPAddrFromAddrPort(relay))
			client.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			for {
				n, _, err := client.ReadFrom(buf)
				if err != nil {
					break
				}
				if src, _, data, err := parseUDPRequest(buf[:n]); err == nil && string(data) == "beta:hi" && netip.MustParseAddr(src) == netip.MustParseAddr(host) {
					return true
				}
			}
		}
		return false
	}
	// beta's echo on its IPv4 and IPv6 address: two destinations.
	ctl1, relay1 := associate()
	if !echoes(relay1, "10.42.0.2") || !echoes(relay1, "fd42:42::2") {
		t.Fatal("the first association's two destinations do not answer")
	}
	_, relay2 := associate()
	if !echoes(relay2, "10.42.0.2") {
		t.Fatal("a third destination within the cap does not answer")
	}
	if echoes(relay2, "fd42:42::2") {
		t.Fatal("a fourth destination over the cap of 3 across associations answered")
	}
	if !strings.Contains(logs.String(), "too many destinations in all associations") {
		t.Errorf("the dropped destination is not logged:\n%s", logs)
	}
	// Ending the first association gives its two places back.
	ctl1.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !echoes(relay2, "fd42:42::2") {
		if time.Now().After(deadline) {
			t.Fatalf("still no room after an association ended: %d destinations counted", s.dests.Total())
		}
	}
}

// TestProxyAuthFailuresLoggedAtBoundedRate: every failed handshake and
// every wrong password was a log line, so anyone able to connect could
// flood the log.
func TestProxyAuthFailuresLoggedAtBoundedRate(t *testing.T) {
	creds := writeCredentials(t, "alice:s3cret-Pass\n")
	_, addr, logs := startLimitedSOCKS(t, func(s *SOCKS5) { s.Auth = creds })
	for range 5 {
		if _, _, err := dialSOCKS(t, addr, "alice", "wrong"); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "socks5 handshake failed") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "socks5 handshake failed"); n != 1 {
		t.Errorf("socks5: %d log lines for 5 failed handshakes, want 1:\n%s", n, logs)
	}

	var hlogs testutil.Buffer
	h := &HTTP{Dialer: newTestMesh(t).alpha(), Book: func() *peerbook.Book { return nil }, Auth: creds,
		Logger: slog.New(slog.NewTextHandler(&hlogs, nil))}
	defer h.Close()
	for range 5 {
		req := httptest.NewRequest("GET", "http://beta/", nil)
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:wrong")))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusProxyAuthRequired {
			t.Fatalf("wrong password: status %d", w.Code)
		}
	}
	if n := strings.Count(hlogs.String(), "http proxy authentication failed"); n != 1 {
		t.Errorf("http: %d log lines for 5 wrong passwords, want 1:\n%s", n, hlogs.String())
	}
}
