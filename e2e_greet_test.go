package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// greetMembers is how many `wgmesh up` processes TestEndToEndStartupGreetings
// starts. With 32, crossed start-up greetings left pairs without a session
// in every run before the greeting rule (3 to 66 member entries).
const greetMembers = 32

// TestEndToEndStartupGreetings starts greetMembers processes from one book
// in which every member has an endpoint on 127.0.0.1, all at once, and
// waits for every pair to have a session with no traffic at all: only the
// start-up greetings can make one. The bound is generous; a pair whose
// greetings crossed used to stay without a session for good.
func TestEndToEndStartupGreetings(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped in -short mode")
	}
	bin := buildBinary(t)
	// The ports are in the book before anyone binds them. A port that
	// happens to be taken makes that process exit; then the whole mesh is
	// started again on other ports, a bounded number of times.
	for attempt := range 3 {
		base := uint16(20000 + rand.N(30000))
		started := time.Now()
		procs, ok := startGreetMesh(t, bin, t.TempDir(), base)
		if !ok {
			t.Logf("attempt %d: a port in %d..%d was taken; trying other ports", attempt+1, base, base+greetMembers-1)
			continue
		}
		waitAllPairs(t, procs, 20*time.Second)
		t.Logf("every pair has a session %v after the first start", time.Since(started).Round(10*time.Millisecond))
		return
	}
	t.Fatal("no free run of UDP ports found in 3 attempts")
}

// startGreetMesh writes the book and starts every member. It reports false,
// having stopped them, when one of them could not bind its port.
func startGreetMesh(t *testing.T, bin, dir string, base uint16) ([]*proc, bool) {
	t.Helper()
	b := &peerbook.Book{
		Format: peerbook.CurrentFormat,
		Serial: 1,
		Mesh:   peerbook.Mesh{Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}},
	}
	keys := make([]string, greetMembers)
	for i := range greetMembers {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = filepath.Join(dir, fmt.Sprintf("m%d.key", i))
		if err := peerbook.WriteKeyFile(keys[i], k); err != nil {
			t.Fatal(err)
		}
		b.Peers = append(b.Peers, peerbook.Peer{
			Name:      fmt.Sprintf("m%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})},
			Endpoint:  peerbook.Endpoint{Host: "127.0.0.1", Port: base + uint16(i)},
		})
	}
	bookPath := filepath.Join(dir, "book.toml")
	if err := os.WriteFile(bookPath, peerbook.Marshal(b), 0o644); err != nil {
		t.Fatal(err)
	}
	procs := make([]*proc, greetMembers)
	for i := range greetMembers {
		name := fmt.Sprintf("m%d", i)
		procs[i] = startUp(t, bin, name, filepath.Join(dir, name, "wgmesh.sock"),
			"--book", bookPath, "--key", keys[i], "--state-dir", filepath.Join(dir, name, "state"), "--log-level", "warn")
	}
	// Every member serves status once its device is up, or exits.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range procs {
		for {
			if p.exited() {
				if strings.Contains(p.stderr.String(), "address already in use") {
					for _, q := range procs {
						stopProc(t, q)
					}
					return nil, false
				}
				t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.stderr.String())
			}
			if _, err := control.NewClient(p.control).Status(t.Context()); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s serves no status after 30 s", p.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return procs, true
}

// waitAllPairs waits until every member reports a handshake with every
// other member, for at most limit, and fails naming the pairs without one.
func waitAllPairs(t *testing.T, procs []*proc, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var missing []string
		for _, p := range procs {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			st, err := control.NewClient(p.control).Status(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: status: %v", p.name, err)
			}
			missing = append(missing, noHandshake(st)...)
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d member entries have no handshake: %s", limit, len(missing), strings.Join(missing, ", "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// noHandshake lists "SELF->PEER" for each member st has no handshake with.
func noHandshake(st node.Status) []string {
	var out []string
	for _, ps := range st.Peers {
		if ps.LastHandshake.IsZero() {
			out = append(out, st.Name+"->"+ps.Name)
		}
	}
	return out
}
