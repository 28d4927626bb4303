package node

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// uapiFake answers gets with fixed text and records sets.
type uapiFake struct {
	get    string
	set    []string
	setErr error
}

func (f *uapiFake) IpcGetOperation(w io.Writer) error { _, err := io.WriteString(w, f.get); return err }

func (f *uapiFake) IpcSetOperation(r io.Reader) error {
	// As the device: read up to the blank line that ends the set.
	br := r.(*bufio.Reader)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\n" {
			break
		}
		b.WriteString(line)
	}
	f.set = append(f.set, b.String())
	return f.setErr
}

// uapiRoundTrip sends one request on c and returns the answer up to and
// including its errno line.
func uapiRoundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer to %q: %v (so far %q)", req, err, b.String())
		}
		b.WriteString(line)
		if strings.HasPrefix(line, "errno=") {
			if blank, _ := br.ReadString('\n'); blank != "\n" {
				t.Fatalf("errno line not followed by a blank line: %q", blank)
			}
			return b.String()
		}
	}
}

// TestUAPIListsIdleMembers: wg show in TUN mode reads the UAPI socket, so
// a get must list the members lazy peers keep out of the device, once
// each, and a set must still reach the device.
func TestUAPIListsIdleMembers(t *testing.T) {
	key := func(b byte) peerbook.Key { var k peerbook.Key; k[0] = b; return k }
	hexk := func(b byte) string { k := key(b); return hex.EncodeToString(k[:]) }
	inDev, idle, woken := key(1), key(2), key(3)
	dev := &uapiFake{get: "listen_port=51820\npublic_key=" + hexk(1) + "\nendpoint=127.0.0.1:1\nrx_bytes=5\n"}
	hs := time.Unix(1700000000, 42)
	rec := func(k peerbook.Key, ep string) *idleRecord {
		return &idleRecord{
			cfg:  &peerConfig{key: k, endpoint: netip.MustParseAddrPort(ep), keepalive: 25, allowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}},
			last: devicePeer{lastHandshake: hs, rx: 100, tx: 200},
		}
	}
	view := &lazyView{idle: map[peerbook.Key]*idleRecord{
		inDev: rec(inDev, "127.0.0.1:9"), // woken since the view: the device shows it
		idle:  rec(idle, "127.0.0.1:2"),
		woken: rec(woken, "127.0.0.1:3"),
	}}
	view.idle[woken].woken.Store(true)

	server, client := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); handleUAPI(server, dev, func() *lazyView { return view }) }()
	br := bufio.NewReader(client)

	got := uapiRoundTrip(t, client, br, "get=1\n\n")
	want := dev.get + "public_key=" + hexk(2) + "\nendpoint=127.0.0.1:2\n" +
		fmt.Sprintf("last_handshake_time_sec=%d\nlast_handshake_time_nsec=42\n", hs.Unix()) +
		"tx_bytes=200\nrx_bytes=100\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nerrno=0\n"
	if got != want {
		t.Fatalf("get answered:\n%s\nwant:\n%s", got, want)
	}
	// The answer parses as a device read with both members.
	p := deviceParser{st: &deviceState{peers: map[peerbook.Key]*devicePeer{}}}
	p.Write([]byte(strings.TrimSuffix(got, "errno=0\n")))
	p.flush()
	if d := p.st.peers[idle]; d == nil || d.rx != 100 || !d.lastHandshake.Equal(hs) || len(p.st.peers) != 2 {
		t.Fatalf("parsed peers %v, want the device's and the idle one", p.st.peers)
	}

	if got := uapiRoundTrip(t, client, br, "set=1\nlisten_port=1\n\n"); got != "errno=0\n" {
		t.Fatalf("set answered %q", got)
	}
	if len(dev.set) != 1 || dev.set[0] != "listen_port=1\n" {
		t.Fatalf("device got sets %q", dev.set)
	}
	dev.setErr = errors.New("boom")
	if got := uapiRoundTrip(t, client, br, "set=1\nlisten_port=2\n\n"); got == "errno=0\n" || !strings.HasPrefix(got, "errno=") {
		t.Fatalf("failed set answered %q, want a non-zero errno", got)
	}
	if got := uapiRoundTrip(t, client, br, "get=1\nx"); !strings.HasPrefix(got, "errno=") || got == "errno=0\n" {
		t.Fatalf("get with a trailing character answered %q, want an error", got)
	}
	client.Close()
	<-done
}
