package registry

import (
	"bytes"
	"encoding/base32"
	"encoding/hex"
	"flag"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestGoldenSRVReply pins the exact bytes a registry sends for one SRV
// query over UDP, as wgsd-client would ask it.
func TestGoldenSRVReply(t *testing.T) {
	key, err := peerbook.ParseKey("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
	if err != nil {
		t.Fatal(err)
	}
	// The label, worked out without the package (and checked with
	// Python: base64.b32encode(base64.b64decode(KEY)).lower()).
	label := strings.ToLower(base32.StdEncoding.EncodeToString(key[:]))
	if len(label) != 56 || !strings.HasSuffix(label, "====") {
		t.Fatalf("label %q: want 56 characters ending in ====", label)
	}
	if label != "yuzaca423oquxzy7rbw2dwg35hxl33iizmirw5juab4jtgvj6a4a====" {
		t.Fatalf("label %q", label)
	}
	s := &Server{Zone: "mesh.", Members: func() []Member {
		return []Member{{
			PublicKey:  key,
			Endpoint:   netip.MustParseAddrPort("198.51.100.7:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.0.7/32"), netip.MustParsePrefix("192.168.7.0/24")},
		}}
	}}
	udp, _ := startServer(t, s)
	q := new(dns.Msg)
	q.SetQuestion(label+"._wireguard._udp.mesh.", dns.TypeSRV)
	q.Id = 0x1234
	packed, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(packed); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := buf[:n]
	if !bytes.Contains(got, []byte(label)) {
		t.Errorf("reply does not hold the label %q", label)
	}

	r := new(dns.Msg)
	if err := r.Unpack(got); err != nil {
		t.Fatal(err)
	}
	text := hex.Dump(got) + "\n" + r.String()
	const path = "testdata/srv_reply.golden"
	if *update {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if text != string(want) {
		t.Errorf("reply differs from %s (go test -run Golden -update rewrites it):\n%s", path, text)
	}
}
