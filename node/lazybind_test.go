package node

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgmesh/wgmesh/peerbook"
)

func newKey(t testing.TB) peerbook.PrivateKey {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testDevice starts a wireguard-go device with key on bind, listening on an
// ephemeral loopback port, and returns it with the port.
func testDevice(t testing.TB, key peerbook.PrivateKey, bind conn.Bind) (*device.Device, uint16) {
	t.Helper()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), bind, device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(dev.Close)
	var w uapiWriter
	w.privateKey(key)
	w.listenPort(0)
	if err := dev.IpcSet(w.String()); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	st, err := readDeviceState(dev, 0)
	if err != nil {
		t.Fatal(err)
	}
	return dev, st.listenPort
}

func addTestPeer(t testing.TB, dev *device.Device, k peerbook.Key, ep netip.AddrPort, allowed string) {
	t.Helper()
	var w uapiWriter
	w.writePeer(&peerConfig{key: k, endpoint: ep, allowedIPs: []netip.Prefix{netip.MustParsePrefix(allowed)}}, false)
	if err := dev.IpcSet(w.String()); err != nil {
		t.Fatal(err)
	}
}

// captureInitiation makes a wireguard-go device with key initiator send a
// handshake initiation to responder and returns the message as it left.
func captureInitiation(t testing.TB, initiator peerbook.PrivateKey, responder peerbook.Key) []byte {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	dev, _ := testDevice(t, initiator, conn.NewDefaultBind())
	addTestPeer(t, dev, responder, sock.LocalAddr().(*net.UDPAddr).AddrPort(), "10.9.0.2/32")
	dev.LookupPeer(device.NoisePublicKey(responder)).SendHandshakeInitiation(false)
	sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	for {
		n, _, err := sock.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no initiation from the device: %v", err)
		}
		if n == device.MessageInitiationSize && buf[0] == device.MessageInitiationType {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

func TestInitiationPeek(t *testing.T) {
	a, b, other := newKey(t), newKey(t), newKey(t)
	msg := captureInitiation(t, a, b.Public())

	p := newInitiationPeeker(b)
	if !p.mac1OK(msg) {
		t.Fatal("MAC1 of a real initiation to this key rejected")
	}
	got, ok := p.initiator(msg)
	if !ok || got != a.Public() {
		t.Fatalf("initiator = %s, %v; want %s", got.Short(), ok, a.Public().Short())
	}

	// Another node's key: MAC1 fails, and the static does not decrypt.
	q := newInitiationPeeker(other)
	if q.mac1OK(msg) {
		t.Error("MAC1 accepted under another node's key")
	}
	if k, ok := q.initiator(msg); ok {
		t.Errorf("initiation to another key decrypted as %s", k.Short())
	}
	// Any changed byte of the ephemeral or the encrypted static breaks it.
	for _, i := range []int{initEphemeral, initStatic + 3, initStaticEnd - 1} {
		bad := append([]byte(nil), msg...)
		bad[i] ^= 1
		if p.mac1OK(bad) {
			t.Errorf("MAC1 accepted with byte %d changed", i)
		}
		if k, ok := p.initiator(bad); ok {
			t.Errorf("byte %d changed: still decrypted as %s", i, k.Short())
		}
	}
	if _, ok := p.initiator(msg[:100]); ok {
		t.Error("a short message decrypted")
	}
}

// TestLazyBindWakesInitiator: device B does not know A; A's initiation
// reaches B's lazy bind, which names A before B's device sees the message,
// and configuring A then lets that very initiation complete the handshake.
func TestLazyBindWakesInitiator(t *testing.T) {
	a, b := newKey(t), newKey(t)
	var (
		mu    sync.Mutex
		woken []peerbook.Key
		devB  *device.Device
		aPort uint16
	)
	ready := make(chan struct{})
	lb := newLazyBind(conn.NewDefaultBind(), b, func() bool { return true }, func(k peerbook.Key) {
		<-ready
		mu.Lock()
		defer mu.Unlock()
		woken = append(woken, k)
		if k == a.Public() && len(woken) == 1 {
			addTestPeer(t, devB, k, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), aPort), "10.9.0.1/32")
		}
	})
	t.Cleanup(lb.closeRate)
	var bPort uint16
	devB, bPort = testDevice(t, b, lb)
	devA, port := testDevice(t, a, conn.NewDefaultBind())
	aPort = port
	close(ready)
	addTestPeer(t, devA, b.Public(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), bPort), "10.9.0.2/32")
	devA.LookupPeer(device.NoisePublicKey(b.Public())).SendHandshakeInitiation(false)

	// One initiation (no retry: wireguard-go retries after 5 s) suffices.
	deadline := time.Now().Add(4 * time.Second)
	for {
		st, err := readDeviceState(devA, 1)
		if err == nil && !st.peers[b.Public()].lastHandshake.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no handshake within 4 s of the wake")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(woken) == 0 || woken[0] != a.Public() {
		t.Fatalf("woken %v, want A first", woken)
	}
}

// BenchmarkInitiationPeek is what the lazy bind adds per initiation while
// some member is idle: MAC1 (all garbage pays) and the whole peek.
func BenchmarkInitiationPeek(b *testing.B) {
	a, r := newKey(b), newKey(b)
	p := newInitiationPeeker(r)
	msg := captureInitiation(b, a, r.Public())
	b.Run("mac1", func(b *testing.B) {
		for b.Loop() {
			if !p.mac1OK(msg) {
				b.Fatal("mac1")
			}
		}
	})
	b.Run("peek", func(b *testing.B) {
		for b.Loop() {
			if _, ok := p.initiator(msg); !ok {
				b.Fatal("peek")
			}
		}
	})
}

// BenchmarkX25519 is one Diffie-Hellman, the unit of handshake cost: the
// peek does one, wireguard-go's responder four (two for the initiation,
// two for its response).
func BenchmarkX25519(b *testing.B) {
	a, r := newKey(b), newKey(b).Public()
	for b.Loop() {
		if _, err := curve25519.X25519(a[:], r[:]); err != nil {
			b.Fatal(err)
		}
	}
}
