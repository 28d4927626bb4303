package netstack

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// transferExact sends n pseudo-random bytes from one stack of a pair to
// the other, in writes of varied sizes, and compares SHA-256 sums.
func transferExact(t *testing.T, v6 bool, n int64) {
	t.Helper()
	p := newWGPair(t, v6)
	client, server := p.stream(t)
	deadline := time.Now().Add(5 * time.Minute)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		h := sha256.New()
		m, err := io.CopyBuffer(h, server, make([]byte, 256<<10))
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = m, err
		got <- r
	}()
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < n; {
		// Odd sizes, so that segments end anywhere.
		k := min(int64(1+rng.IntN(len(buf))), n-sent)
		chunk := buf[:k]
		for i := 0; i+8 <= len(chunk); i += 8 {
			v := rng.Uint64()
			chunk[i], chunk[i+1], chunk[i+2], chunk[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			chunk[i+4], chunk[i+5], chunk[i+6], chunk[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
		}
		h.Write(chunk)
		if _, err := client.Write(chunk); err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
		sent += k
	}
	client.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("read: %v", r.err)
	}
	if r.n != n {
		t.Fatalf("received %d bytes, sent %d", r.n, n)
	}
	if [32]byte(h.Sum(nil)) != r.sum {
		t.Fatal("received bytes differ from those sent")
	}
}

// TestStreamExact moves 32 MiB each way of IP version byte-exact.
func TestStreamExact(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		transferExact(t, v6, 32<<20)
	}
}
