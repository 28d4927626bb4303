package node

import (
	"context"
	"fmt"
	"testing"

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
