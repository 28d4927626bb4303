package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// BenchmarkReadDevice measures one read of the device's state as every
// tick takes it ("read": the UAPI get and its parse), the device's UAPI
// get alone ("ipcget") and the parse alone, at 1,000 and 10,000 members.
// Run with `go test ./node -run XXX -bench ReadDevice`.
func BenchmarkReadDevice(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		book, key := bigBook(b, size)
		n, err := New(Config{Book: book, PrivateKey: key, ListenPort: EphemeralPort})
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Up(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("ipcget/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := n.dev.IpcGet(); err != nil {
					b.Fatal(err)
				}
			}
		})
		text, err := n.dev.IpcGet()
		if err != nil {
			b.Fatal(err)
		}
		// The parse alone, of the same text: the line-by-line parse it
		// replaced, and deviceParser.
		b.Run(fmt.Sprintf("parse-strings/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				parseReference(text)
			}
		})
		raw := []byte(text)
		b.Run(fmt.Sprintf("parse/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p := deviceParser{st: &deviceState{peers: make(map[peerbook.Key]*devicePeer, size)}}
				p.slab = make([]devicePeer, 0, size+16)
				p.Write(raw)
				p.flush()
			}
		})
		b.Run(fmt.Sprintf("read/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := readDeviceState(n.dev, size); err != nil {
					b.Fatal(err)
				}
			}
		})
		n.Close()
	}
}

// BenchmarkStatus measures what the tick adds to publish the status
// snapshot ("publish") and what one Status call costs ("status"), at
// 10,000 members.
func BenchmarkStatus(b *testing.B) {
	book, key := bigBook(b, 10000)
	n, err := New(Config{Book: book, PrivateKey: key, ListenPort: EphemeralPort})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	dev, err := n.readDevice()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("publish/10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n.do(func() { n.publishStatusLocked(dev) })
		}
	})
	b.Run("status/10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n.Status()
		}
	})
}

// BenchmarkStatusDuringApply asks Status back to back while a 10,000-member
// node applies a book in which every fourth endpoint moved, and reports the
// slowest answer (max-status-ms) next to the apply (apply-ms): Status must
// not wait for the apply.
func BenchmarkStatusDuringApply(b *testing.B) {
	const size = 10000
	book, key := bigBook(b, size)
	changed := *book
	changed.Serial++
	changed.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i := 1; i < size; i += 4 {
		changed.Peers[i].Endpoint.Port++
	}
	n, err := New(Config{Book: book, PrivateKey: key, ListenPort: EphemeralPort})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	books := []*peerbook.Book{&changed, book}
	var slowest, apply time.Duration
	i := 0
	for b.Loop() {
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- n.Reload(context.Background(), books[i%2]) }()
		i++
		for running := true; running; {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				apply += time.Since(start)
				running = false
			default:
				t0 := time.Now()
				n.Status()
				slowest = max(slowest, time.Since(t0))
			}
		}
	}
	b.ReportMetric(float64(slowest.Microseconds())/1000, "max-status-ms")
	b.ReportMetric(float64(apply.Microseconds())/1000/float64(i), "apply-ms")
}
