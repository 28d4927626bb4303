package netstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// wgKey returns a fresh private key and its public key, hex encoded for UAPI.
func wgKey(tb testing.TB) (priv, pub string) {
	tb.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		tb.Fatal(err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(k[:]), hex.EncodeToString(p)
}

// wgPair is two stacks joined by two wireguard-go devices over UDP on
// 127.0.0.1, as two members of a mesh are.
type wgPair struct {
	a, b       *Stack
	addrA      netip.Addr
	addrB      netip.Addr
	devA, devB *device.Device
}

func newWGPair(tb testing.TB, v6 bool) *wgPair {
	tb.Helper()
	return newWGPairWith(tb, v6, nil)
}

// newWGPairWith is newWGPair with each stack wrapped by wrap, when not nil,
// before wireguard-go gets it.
func newWGPairWith(tb testing.TB, v6 bool, wrap func(*Stack) tun.Device) *wgPair {
	tb.Helper()
	p := &wgPair{addrA: netip.MustParseAddr("10.99.0.1"), addrB: netip.MustParseAddr("10.99.0.2")}
	if v6 {
		p.addrA, p.addrB = netip.MustParseAddr("fd99::1"), netip.MustParseAddr("fd99::2")
	}
	var err error
	if p.a, err = New([]netip.Addr{p.addrA}, 1420, Options{}); err != nil {
		tb.Fatal(err)
	}
	if p.b, err = New([]netip.Addr{p.addrB}, 1420, Options{}); err != nil {
		tb.Fatal(err)
	}
	logger := device.NewLogger(device.LogLevelError, "")
	var tunA, tunB tun.Device = p.a, p.b
	if delay, loss := pathFromEnv(); delay > 0 || loss > 0 {
		tunA, tunB = newLossy(p.a, delay, loss), newLossy(p.b, delay, loss)
	}
	if wrap != nil {
		tunA, tunB = wrap(p.a), wrap(p.b)
	}
	p.devA = device.NewDevice(tunA, conn.NewDefaultBind(), logger)
	p.devB = device.NewDevice(tunB, conn.NewDefaultBind(), logger)
	tb.Cleanup(func() {
		p.devA.Close()
		p.devB.Close()
	})
	// The port is bound only once a device is up.
	if err := p.devA.Up(); err != nil {
		tb.Fatal(err)
	}
	if err := p.devB.Up(); err != nil {
		tb.Fatal(err)
	}
	privA, pubA := wgKey(tb)
	privB, pubB := wgKey(tb)
	portA := setKey(tb, p.devA, privA)
	portB := setKey(tb, p.devB, privB)
	bits := 32
	if v6 {
		bits = 128
	}
	setPeer(tb, p.devA, pubB, portB, fmt.Sprintf("%s/%d", p.addrB, bits))
	setPeer(tb, p.devB, pubA, portA, fmt.Sprintf("%s/%d", p.addrA, bits))
	return p
}

func setKey(tb testing.TB, dev *device.Device, priv string) int {
	tb.Helper()
	if err := dev.IpcSet("private_key=" + priv + "\nlisten_port=0\n"); err != nil {
		tb.Fatal(err)
	}
	get, err := dev.IpcGet()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(get, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			port, err := strconv.Atoi(v)
			if err != nil {
				tb.Fatal(err)
			}
			return port
		}
	}
	tb.Fatal("no listen_port in UAPI")
	return 0
}

func setPeer(tb testing.TB, dev *device.Device, pub string, port int, allowed string) {
	tb.Helper()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=%s\n", pub, port, allowed)
	if err := dev.IpcSet(cfg); err != nil {
		tb.Fatal(err)
	}
}

// stream opens a TCP connection from a to b and returns both ends.
func (p *wgPair) stream(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(p.addrB, 5201))
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err = p.a.DialTCP(ctx, netip.AddrPortFrom(p.addrB, 5201))
	if err != nil {
		tb.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// benchStream writes b.N MiB from src and checks that dst reads them all;
// the figure is the stream's throughput.
func benchStream(b *testing.B, src, dst net.Conn) {
	const chunk = 1 << 20
	done := make(chan int64, 1)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, dst, make([]byte, 256<<10))
		done <- n
	}()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := src.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	src.Close()
	n := <-done
	b.StopTimer()
	if n != int64(b.N)*chunk {
		b.Fatalf("received %d bytes, sent %d", n, int64(b.N)*chunk)
	}
}

// BenchmarkNetstackPair moves one TCP stream through two stacks joined by
// wireguard-go on loopback UDP; the figure is the stream's throughput.
func BenchmarkNetstackPair(b *testing.B) {
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"v4", false}, {"v6", true}} {
		b.Run(fam.name, func(b *testing.B) {
			p := newWGPair(b, fam.v6)
			client, server := p.stream(b)
			benchStream(b, client, server)
		})
	}
}

// BenchmarkTCPSettings runs BenchmarkNetstackPair's stream under TCP
// setting variants, sent by the end that dialed and by the end that
// accepted (the two differ: see tcpDefaults). WGMESH_BENCH_DELAY and
// WGMESH_BENCH_LOSS put a long, lossy path between the stacks.
func BenchmarkTCPSettings(b *testing.B) {
	big := [3]int{4 << 10, 1 << 20, 8 << 20}
	for _, v := range []struct {
		name string
		set  tcpSettings
		// stack-wide buffer maxima only, without tcpConn's per path
		stackOnly bool
	}{
		{"reno", tcpDefaults, false},
		{"reno-4M", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true}, true},
		{"reno-snd4M", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true, rcvBuf: big}, false},
		{"reno-norack", tcpSettings{sack: true, rack: false, cc: "reno", moderateRcvBuf: true}, true},
		{"reno-noprobefix", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true}, true},
		{"cubic", tcpSettings{sack: true, rack: true, cc: "cubic", moderateRcvBuf: true}, true},
		{"reno-nomoderate", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: false}, true},
		{"reno-8M", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true, sndBuf: big, rcvBuf: big}, true},
		{"reno-rcv2M", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true, rcvBuf: [3]int{4 << 10, 1 << 20, 2 << 20}}, true},
		{"cubic-8M", tcpSettings{sack: true, rack: true, cc: "cubic", moderateRcvBuf: true, sndBuf: big, rcvBuf: big}, true},
	} {
		for _, dir := range []string{"dialer-sends", "acceptor-sends"} {
			b.Run(v.name+"/"+dir, func(b *testing.B) {
				saved, savedFix, savedPath := tcpDefaults, fixTailProbes, pathBuffers
				tcpDefaults, fixTailProbes, pathBuffers = v.set, v.name != "reno-noprobefix", !v.stackOnly
				defer func() { tcpDefaults, fixTailProbes, pathBuffers = saved, savedFix, savedPath }()
				p := newWGPair(b, false)
				client, server := p.stream(b)
				sender := p.a
				if dir == "dialer-sends" {
					benchStream(b, client, server)
				} else {
					sender = p.b
					benchStream(b, server, client)
				}
				// Times the sender entered loss recovery, and ACKs the
				// endpoint gave a D-SACK (tailprobe.go).
				b.ReportMetric(float64(sender.stack.Stats().TCP.SACKRecovery.Value()), "recoveries")
				b.ReportMetric(float64(sender.ep.tail.fixed.Load()), "dsacks")
			})
		}
	}
}

// BenchmarkTCPRequests measures what loss recovery means for request/
// response traffic: b.N requests of 100 bytes, each answered with 32 KiB,
// reported as p50 and p99 latency. Run it on a lossy path, e.g.
//
//	WGMESH_BENCH_DELAY=5ms WGMESH_BENCH_LOSS=0.01 \
//	  go test ./netstack -run XXX -bench TCPRequests -benchtime 400x
func BenchmarkTCPRequests(b *testing.B) {
	for _, v := range []struct {
		name string
		set  tcpSettings
	}{
		{"reno", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true}},
		{"reno-norack", tcpSettings{sack: true, rack: false, cc: "reno", moderateRcvBuf: true}},
		{"reno-noprobefix", tcpSettings{sack: true, rack: true, cc: "reno", moderateRcvBuf: true}},
	} {
		b.Run(v.name, func(b *testing.B) {
			saved, savedFix := tcpDefaults, fixTailProbes
			tcpDefaults, fixTailProbes = v.set, v.name != "reno-noprobefix"
			defer func() { tcpDefaults, fixTailProbes = saved, savedFix }()
			p := newWGPair(b, false)
			client, server := p.stream(b)
			go func() {
				req, resp := make([]byte, 100), make([]byte, 32<<10)
				for {
					if _, err := io.ReadFull(server, req); err != nil {
						return
					}
					if _, err := server.Write(resp); err != nil {
						return
					}
				}
			}()
			req, resp := make([]byte, 100), make([]byte, 32<<10)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := client.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, resp); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e6 }
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
		})
	}
}
