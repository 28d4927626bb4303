package node

import (
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

func testKey(t *testing.T) peerbook.Key {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// TestGreetOneSidePerPair: at start-up exactly one member of every pair
// greets, and the other greets in round 0 exactly when no handshake has
// completed; so two members started together never cross.
func TestGreetOneSidePerPair(t *testing.T) {
	keys := make([]peerbook.Key, 40)
	for i := range keys {
		keys[i] = testKey(t)
	}
	for _, a := range keys {
		for _, b := range keys {
			if a == b {
				if greetsFirst(a, b) {
					t.Fatal("a member greets itself first")
				}
				continue
			}
			if greetsFirst(a, b) == greetsFirst(b, a) {
				t.Fatalf("greetsFirst(%s, %s) == greetsFirst(%s, %s)", a.Short(), b.Short(), b.Short(), a.Short())
			}
			startA := slices.Contains(greetTargets(a, -1, []greetMember{{key: b, hasEndpoint: true}}), b)
			startB := slices.Contains(greetTargets(b, -1, []greetMember{{key: a, hasEndpoint: true}}), a)
			if startA == startB {
				t.Fatalf("at start-up %s greets: %v, %s greets: %v; want exactly one", a.Short(), startA, b.Short(), startB)
			}
			// The side that waited greets in round 0 unless the first
			// side's greeting made a session; the first side does not.
			first, second := a, b
			if startB {
				first, second = b, a
			}
			if !slices.Contains(greetTargets(second, 0, []greetMember{{key: first, hasEndpoint: true}}), first) {
				t.Fatalf("%s does not greet %s in round 0 with no handshake", second.Short(), first.Short())
			}
			if got := greetTargets(second, 0, []greetMember{{key: first, hasEndpoint: true, handshake: true}}); len(got) != 0 {
				t.Fatalf("%s greets %s in round 0 despite a handshake", second.Short(), first.Short())
			}
			if got := greetTargets(first, 0, []greetMember{{key: second, hasEndpoint: true}}); len(got) != 0 {
				t.Fatalf("%s greets %s again in round 0, while WireGuard retries its start-up greeting", first.Short(), second.Short())
			}
		}
	}
}

func TestGreetTargets(t *testing.T) {
	self := testKey(t)
	var lower, higher peerbook.Key
	for lower.IsZero() || higher.IsZero() {
		k := testKey(t)
		if greetsFirst(k, self) {
			lower = k
		} else {
			higher = k
		}
	}
	other := testKey(t)
	members := []greetMember{
		{key: self, hasEndpoint: true},
		{key: lower, hasEndpoint: true},
		{key: higher, hasEndpoint: true},
		{key: other, hasEndpoint: false},
	}
	withHandshake := slices.Clone(members)
	for i := range withHandshake {
		withHandshake[i].handshake = true
	}
	tests := []struct {
		name    string
		round   int
		members []greetMember
		want    []peerbook.Key
	}{
		{"start-up greets higher keys", -1, members, []peerbook.Key{higher}},
		{"round 0 greets lower keys", 0, members, []peerbook.Key{lower}},
		{"later rounds greet everyone without a handshake", 1, members, []peerbook.Key{lower, higher}},
		{"last round", len(greetRounds) - 1, members, []peerbook.Key{lower, higher}},
		{"nobody with a handshake", 1, withHandshake, nil},
		{"nobody with a handshake at start-up", -1, withHandshake, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := greetTargets(self, tt.round, tt.members); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGreetRoundsBackOff: the rounds are few, end before WireGuard's own
// 90 s of retries, and are far enough apart that WireGuard never skips a
// round's initiation because of the previous round's.
func TestGreetRoundsBackOff(t *testing.T) {
	if len(greetRounds) == 0 || len(greetRounds) > 8 {
		t.Fatalf("%d rounds", len(greetRounds))
	}
	if last := greetRounds[len(greetRounds)-1] + greetJitter; last > 90*time.Second {
		t.Fatalf("last round at up to %v, after WireGuard gave up", last)
	}
	if greetRounds[0] > 2*time.Second {
		t.Fatalf("the member that waits greets only after %v", greetRounds[0])
	}
	for i := 1; i < len(greetRounds); i++ {
		gap := greetRounds[i] - greetRounds[i-1]
		if gap < device.RekeyTimeout+greetJitter {
			t.Errorf("rounds %d and %d are %v apart; want more than the %v rekey timeout plus %v jitter", i-1, i, gap, device.RekeyTimeout, greetJitter)
		}
		if i > 1 && gap < greetRounds[i-1]-greetRounds[i-2] {
			t.Errorf("round %d comes sooner after its predecessor than round %d: no backoff", i, i-1)
		}
	}
}

// TestGreetWhenOnlyThisSideCan: a member without an endpoint in the book
// cannot be greeted, so it greets every member at start-up whatever the
// key order, and not again in round 0.
func TestGreetWhenOnlyThisSideCan(t *testing.T) {
	self := testKey(t)
	var lower peerbook.Key
	for lower.IsZero() {
		if k := testKey(t); greetsFirst(k, self) {
			lower = k
		}
	}
	m := greetMember{key: lower, hasEndpoint: true, cannotGreet: true}
	if got := greetTargets(self, -1, []greetMember{m}); !slices.Equal(got, []peerbook.Key{lower}) {
		t.Errorf("start-up greets %v; want the lower key too, as it cannot greet this member", got)
	}
	if got := greetTargets(self, 0, []greetMember{m}); len(got) != 0 {
		t.Errorf("round 0 greets %v again, while WireGuard retries the start-up greeting", got)
	}
	m.cannotGreet = false
	if got := greetTargets(self, -1, []greetMember{m}); len(got) != 0 {
		t.Errorf("start-up greets the lower key %v although it greets first", got)
	}
}
