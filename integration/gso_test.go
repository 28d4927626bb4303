package integration

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestTUNGSOMessagesStayWhole: at MTU 1392 wireguard-go coalesces 46
// datagrams of 1,424 bytes into one 65,504-byte UDP GSO message, which
// the kernel segments in software (node/splitbind.go). The sender's veth
// then counts one packet per datagram (~1.5 kB each) instead of one per
// message. With the node's split every message passes whole.
func TestTUNGSOMessagesStayWhole(t *testing.T) {
	needRoot(t, "ip", "ping")
	dir := t.TempDir()
	ms := newMembers(t, dir, "gsoa", "gsob")
	b := meshBook(ms)
	b.Mesh.MTU = 1392
	book := writeBook(t, dir, b)
	for _, m := range ms {
		m.start(t, book, "--mode", "tun", "--interface", m.IfName)
	}
	alpha, beta := ms[0], ms[1]
	waitPing(t, alpha.NS, meshAddr4(1))

	var ln net.Listener
	var err error
	dst := netip.AddrPortFrom(meshAddr4(1), 7001)
	beta.NS.Do(func() { ln, err = net.Listen("tcp", dst.String()) })
	if err != nil {
		t.Fatal(err)
	}
	testutil.ServeConns(t, ln, func(c net.Conn) { io.Copy(io.Discard, c) })

	txPackets0, txBytes0 := ethTX(t, alpha.NS)
	var c net.Conn
	alpha.NS.Do(func() { c, err = net.DialTimeout("tcp", dst.String(), 10*time.Second) })
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	// 256 MiB or 10 s, whichever comes first: enough full batches either way.
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<20)
	sent := 0
	for range 256 {
		n, err := c.Write(buf)
		sent += n
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				t.Fatalf("write after %d bytes: %v", sent, err)
			}
			break
		}
	}
	c.Close()
	txPackets, txBytes := ethTX(t, alpha.NS)
	packets, bytes := txPackets-txPackets0, txBytes-txBytes0
	if sent < 32<<20 || packets == 0 {
		t.Fatalf("only %d bytes through the mesh (%d packets on eth0)", sent, packets)
	}
	// Whole messages carry up to 45 datagrams; software segmentation one.
	per := bytes / packets
	t.Logf("%d MiB sent, %d packets of %d bytes on average on alpha's eth0", sent>>20, packets, per)
	if per < 8000 {
		t.Errorf("alpha's eth0 sent %d bytes per packet: the kernel segmented UDP GSO messages in software", per)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ethTX returns the packets and bytes ns's eth0 has sent.
func ethTX(t *testing.T, ns *netNS) (packets, bytes int64) {
	t.Helper()
	read := func(name string) int64 {
		out := ns.Run("cat", "/sys/class/net/eth0/statistics/"+name)
		v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatalf("eth0 %s: %q", name, out)
		}
		return v
	}
	return read("tx_packets"), read("tx_bytes")
}
