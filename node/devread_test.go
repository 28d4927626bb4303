package node

import (
	"bufio"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// parseReference is the straightforward parse of the UAPI get text that
// deviceParser replaced; the test compares the two.
func parseReference(text string) *deviceState {
	st := &deviceState{peers: map[peerbook.Key]*devicePeer{}}
	var cur *devicePeer
	var sec, nsec int64
	flush := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.lastHandshake = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch key {
		case "listen_port":
			p, _ := strconv.ParseUint(value, 10, 16)
			st.listenPort = uint16(p)
		case "public_key":
			flush()
			var k peerbook.Key
			if b, err := hex.DecodeString(value); err == nil && len(b) == len(k) {
				copy(k[:], b)
			}
			cur = &devicePeer{}
			st.peers[k] = cur
		case "endpoint":
			if cur != nil {
				cur.endpoint, _ = netip.ParseAddrPort(value)
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.rx, _ = strconv.ParseUint(value, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.tx, _ = strconv.ParseUint(value, 10, 64)
			}
		}
	}
	flush()
	return st
}

func TestDeviceParser(t *testing.T) {
	k1, k2, k3 := strings.Repeat("ab", 32), strings.Repeat("01", 32), strings.Repeat("fe", 32)
	text := "private_key=" + strings.Repeat("00", 32) + "\nlisten_port=51820\n" +
		"public_key=" + k1 + "\npreshared_key=" + strings.Repeat("00", 32) + "\nprotocol_version=1\n" +
		"endpoint=127.0.0.1:9\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123\n" +
		"tx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.1/32\n" +
		"public_key=" + k2 + "\nendpoint=[fd00::1]:51820\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" +
		"tx_bytes=0\nrx_bytes=0\n" +
		"public_key=" + k3 + "\nendpoint=255.255.255.255:65535\ntx_bytes=18446744073709551615\n" +
		"public_key=zz\nendpoint=1.2.3.4:99999\nlast_handshake_time_sec=5\n"
	want := parseReference(text)
	// Split the text into every pair of writes, as a device may.
	for cut := 0; cut <= len(text); cut += 7 {
		p := deviceParser{st: &deviceState{peers: map[peerbook.Key]*devicePeer{}}}
		p.Write([]byte(text[:cut]))
		p.Write([]byte(text[cut:]))
		p.flush()
		got := p.st
		if got.listenPort != want.listenPort || len(got.peers) != len(want.peers) {
			t.Fatalf("cut %d: port %d, %d peers; want %d, %d", cut, got.listenPort, len(got.peers), want.listenPort, len(want.peers))
		}
		for k, w := range want.peers {
			g, ok := got.peers[k]
			if !ok || *g != *w {
				t.Fatalf("cut %d: peer %x: %+v, want %+v", cut, k[:4], g, w)
			}
		}
	}
}
