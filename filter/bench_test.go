package filter

import (
	"fmt"
	"strings"
	"testing"
)

// benchBook: 200 members, srv first, and n rules towards srv, each from a
// different member or group with a few port ranges, the last one opening
// tcp:22 for member m199 (the packet of the benchmark).
func benchBook(n int) string {
	var b strings.Builder
	b.WriteString("format = 1\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n")
	for i := range 200 {
		fmt.Fprintf(&b, "\n[[peer]]\nname = \"m%d\"\npublic_key = %q\naddresses = [\"10.42.%d.%d\"]\ngroups = [\"g%d\"]\n", i, key(i+1), i/250, i%250+1, i%10)
	}
	for i := range n {
		from := fmt.Sprintf("m%d", i%200)
		if i%3 == 0 {
			from = fmt.Sprintf("group:g%d", i%10)
		}
		if i == n-1 {
			from = "m199"
		}
		if from == "m0" {
			from = "m1"
		}
		fmt.Fprintf(&b, "\n[[rule]]\nfrom = [%q]\nto = [\"m0\"]\nports = [\"tcp:%d\", \"tcp:%d-%d\", \"udp:%d\", \"tcp:22\"]\n", from, 1000+i, 2000+10*i, 2005+10*i, 3000+i)
	}
	return b.String()
}

func BenchmarkInbound(b *testing.B) {
	for _, n := range []int{0, 10, 100} {
		r := compile(b, benchBook(n), 1)
		f := New(r, Options{})
		allowed := tcp("10.42.0.200", 40000, "10.42.0.1", 22, tcpACK)
		denied := tcp("10.42.0.200", 40000, "10.42.0.1", 23, tcpACK)
		b.Run(fmt.Sprintf("rules=%d/allowed", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v, _ := f.Inbound(allowed); v.Drop() {
					b.Fatal(v)
				}
			}
		})
		if n == 0 {
			continue
		}
		b.Run(fmt.Sprintf("rules=%d/denied", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v, _ := f.Inbound(denied); !v.Drop() {
					b.Fatal(v)
				}
			}
		})
	}
}

// BenchmarkTracked: a reply to a flow this member started (conntrack
// lookup and refresh), and the outbound packet that refreshes it.
func BenchmarkTracked(b *testing.B) {
	f := New(compile(b, benchBook(100), 1), Options{})
	out := udp("10.42.0.1", 5353, "10.42.0.200", 7000)
	in := udp("10.42.0.200", 7000, "10.42.0.1", 5353)
	f.Outbound(out)
	b.Run("inbound", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v, _ := f.Inbound(in); v != AcceptTracked {
				b.Fatal(v)
			}
		}
	})
	b.Run("outbound", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Outbound(out)
		}
	})
	b.Run("inbound-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				f.Inbound(in)
			}
		})
	})
}

// BenchmarkConntrackInsert: a new flow per packet (a different source
// port each time) into a full table, so every insert also evicts.
func BenchmarkConntrackInsert(b *testing.B) {
	f := New(compile(b, benchBook(100), 1), Options{MaxFlows: 4096})
	pkts := make([][]byte, 1<<16)
	for i := range pkts {
		pkts[i] = udp("10.42.0.1", uint16(i), "10.42.0.200", 7000)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.Outbound(pkts[i&(1<<16-1)])
		i++
	}
}

// BenchmarkOutboundOpen: what a book without rules costs outbound, for a
// data segment and for a SYN (noted for a later first rule).
func BenchmarkOutboundOpen(b *testing.B) {
	f := New(compile(b, benchBook(0), 1), Options{})
	data := tcp("10.42.0.1", 40000, "10.42.0.200", 22, tcpACK)
	syn := tcp("10.42.0.1", 40000, "10.42.0.200", 22, tcpSYN)
	b.Run("data", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Outbound(data)
		}
	})
	b.Run("syn", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Outbound(syn)
		}
	})
}
