package peerbook

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(t *testing.T) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func mustParse(t *testing.T, text string) *Book {
	t.Helper()
	b, err := Parse("book.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addrsOf(p Peer) string {
	var s []string
	for _, a := range p.Addresses {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

const memberBook = `format = 1
serial = 4

[mesh]
networks = ["10.9.0.0/29", "fd09::/125"]

[[peer]]
name = "a"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.9.0.1", "fd09::1"]

[[peer]]
name = "c"
public_key = "MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo="
addresses = ["10.9.0.3", "fd09::2"]
`

func TestAddMemberAllocates(t *testing.T) {
	b := mustParse(t, memberBook)
	// IPv4: .2 is the hole, then .4, .5, .6; .7 is the broadcast address.
	// IPv6 (/125, no broadcast): ::3 onwards, ::7 included.
	want := []string{"10.9.0.2 fd09::3", "10.9.0.4 fd09::4", "10.9.0.5 fd09::5", "10.9.0.6 fd09::6"}
	for i, w := range want {
		nb, err := AddMember(b, Member{Name: "n" + string(rune('0'+i)), PublicKey: testKey(t)})
		if err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
		if got := addrsOf(nb.Peers[len(nb.Peers)-1]); got != w {
			t.Errorf("add %d: addresses %s, want %s", i, got, w)
		}
		if nb.Serial != b.Serial+1 {
			t.Errorf("add %d: serial %d, want %d", i, nb.Serial, b.Serial+1)
		}
		b = nb
	}
	_, err := AddMember(b, Member{Name: "full", PublicKey: testKey(t)})
	if err == nil || !strings.Contains(err.Error(), "mesh network 10.9.0.0/29 is full: all of its 6 host addresses are used") {
		t.Errorf("add to a full network: %v", err)
	}
	// An explicit address stands for its network; the other one is allocated.
	b = mustParse(t, memberBook)
	nb, err := AddMember(b, Member{Name: "x", PublicKey: testKey(t), Addresses: []netip.Addr{netip.MustParseAddr("10.9.0.6")}})
	if err != nil || addrsOf(nb.Peers[2]) != "10.9.0.6 fd09::3" {
		t.Errorf("explicit address: %v %v", nb, err)
	}
	if len(b.Peers) != 2 {
		t.Error("AddMember changed its argument")
	}
}

func TestAddMemberRefuses(t *testing.T) {
	b := mustParse(t, memberBook)
	for _, tc := range []struct {
		m    Member
		want string
	}{
		{Member{Name: "A", PublicKey: testKey(t)}, `member "A" already exists (as "a";`},
		{Member{Name: "b", PublicKey: b.Peers[1].PublicKey}, `is already used by member "c"`},
		{Member{Name: "b_1", PublicKey: testKey(t)}, `name "b_1" is not a DNS label`},
		{Member{Name: "b", PublicKey: testKey(t), Groups: []string{"ops", "OPS"}}, `group "OPS" is listed twice`},
		{Member{Name: "b", PublicKey: testKey(t), Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}}, "overlaps mesh network 10.9.0.0/29"},
		{Member{Name: "b", PublicKey: testKey(t), Addresses: []netip.Addr{netip.MustParseAddr("10.9.0.1")}}, `address 10.9.0.1 is already used by peer "a";`},
	} {
		if _, err := AddMember(b, tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddMember(%+v): %v, want %q", tc.m, err, tc.want)
		}
	}
}

func TestRemoveAndSetMember(t *testing.T) {
	b := mustParse(t, memberBook)
	nb, err := RemoveMember(b, "A")
	if err != nil || len(nb.Peers) != 1 || nb.Peers[0].Name != "c" || nb.Serial != 5 {
		t.Fatalf("remove: %+v %v", nb, err)
	}
	if _, err := RemoveMember(nb, "c"); err == nil {
		t.Error("removed the last member")
	}
	if _, err := RemoveMember(b, "zz"); !errors.Is(err, ErrNoMember) {
		t.Errorf("remove unknown: %v", err)
	}
	ep := Endpoint{Host: "192.0.2.1", Port: 51820}
	yes := true
	nb, err = SetMember(b, "c", Change{Endpoint: &ep, Relay: &yes})
	if err != nil || nb.Peers[1].Endpoint != ep || !nb.Peers[1].Relay || nb.Peers[0].Relay {
		t.Fatalf("set: %+v %v", nb, err)
	}
	if _, err := SetMember(nb, "c", Change{Endpoint: &ep}); err == nil || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("set without a change: %v", err)
	}
	k := b.Peers[0].PublicKey
	if _, err := SetMember(b, "c", Change{PublicKey: &k}); err == nil {
		t.Error("set took another member's key")
	}
}

const commentedBook = `# The office mesh. Ask Ann before changing [mesh].
format = 1
serial = 7 # raise me

[mesh]
networks = ["10.9.0.0/24"]

# The gateway; do not remove.
[[peer]]
name = "a"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.9.0.1"] # first

# Carl's laptop
[[peer]]
name = "c"
public_key = "MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo="
addresses = ["10.9.0.3"]

[[peer]] # last
name = "d"
public_key = "EG5s6psBQfTap3EclLADZLDBk3NMZZrFw0sFI2dngHg="
addresses = ["10.9.0.4"]
`

func edit(t *testing.T, text string, ob, nb *Book) string {
	t.Helper()
	out, inPlace := EditText([]byte(text), ob, nb)
	if !inPlace {
		t.Errorf("not edited in place:\n%s", out)
	}
	return string(out)
}

func TestEditTextKeepsComments(t *testing.T) {
	b := mustParse(t, commentedBook)
	k := testKey(t)
	nb, err := AddMember(b, Member{Name: "e", PublicKey: k, Groups: []string{"ops"}})
	if err != nil {
		t.Fatal(err)
	}
	got := edit(t, commentedBook, b, nb)
	want := strings.Replace(commentedBook, "serial = 7 #", "serial = 8 #", 1) +
		"\n[[peer]]\nname = \"e\"\npublic_key = \"" + k.String() + "\"\naddresses = [\"10.9.0.2\"]\ngroups = [\"ops\"]\n"
	if got != want {
		t.Errorf("add:\n%s\nwant:\n%s", got, want)
	}

	nb, err = RemoveMember(b, "c")
	if err != nil {
		t.Fatal(err)
	}
	got = edit(t, commentedBook, b, nb)
	want = strings.Replace(commentedBook, "serial = 7", "serial = 8", 1)
	want = strings.Replace(want, "# Carl's laptop\n[[peer]]\nname = \"c\"\npublic_key = \"MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo=\"\naddresses = [\"10.9.0.3\"]\n\n", "", 1)
	if got != want {
		t.Errorf("remove:\n%s\nwant:\n%s", got, want)
	}

	ep := Endpoint{Host: "192.0.2.1", Port: 51820}
	nb, err = SetMember(b, "a", Change{Endpoint: &ep})
	if err != nil {
		t.Fatal(err)
	}
	got = edit(t, commentedBook, b, nb)
	want = strings.Replace(commentedBook, "serial = 7", "serial = 8", 1)
	want = strings.Replace(want, `addresses = ["10.9.0.1"] # first`, `addresses = ["10.9.0.1"]`+"\nendpoint = \"192.0.2.1:51820\"", 1)
	if got != want {
		t.Errorf("set:\n%s\nwant:\n%s", got, want)
	}

	// Without a serial key, one is added after format.
	noSerial := strings.Replace(commentedBook, "serial = 7 # raise me\n", "", 1)
	b = mustParse(t, noSerial)
	nb, _ = RemoveMember(b, "d")
	if got := edit(t, noSerial, b, nb); !strings.HasPrefix(got, "# The office mesh. Ask Ann before changing [mesh].\nformat = 1\nserial = 1\n") {
		t.Errorf("no serial:\n%s", got)
	}
}

func TestEditTextFallsBackToMarshal(t *testing.T) {
	inline := "format = 1\nserial = 1\nmesh = { networks = [\"10.9.0.0/24\"] }\npeer = [{ name = \"a\", public_key = \"zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo=\", addresses = [\"10.9.0.1\"] }]\n"
	b := mustParse(t, inline)
	nb, err := AddMember(b, Member{Name: "b", PublicKey: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got, inPlace := EditText([]byte(inline), b, nb); inPlace || string(got) != string(Marshal(nb)) {
		t.Errorf("inline peers: in place %v, got\n%s", inPlace, got)
	}
}

// TestEditTextGoodBooks removes, changes and adds members of every good
// book: the edit is made in place and parses to the changed book.
func TestEditTextGoodBooks(t *testing.T) {
	files, _ := filepath.Glob("../testdata/good/*.toml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Parse(f, data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		check := func(what string, nb *Book, err error) {
			t.Helper()
			if err != nil && len(b.Rules) > 0 && strings.Contains(err.Error(), ": rule #") && !strings.Contains(what, "add") {
				// Removing a member, or its groups, that a rule names
				// leaves the rule pointing at nothing: refused, as
				// book check would refuse the file.
				return
			}
			if err != nil {
				t.Errorf("%s: %s: %v", f, what, err)
				return
			}
			out, inPlace := EditText(data, b, nb)
			got, err := Parse(f, out)
			switch {
			case !inPlace:
				t.Errorf("%s: %s: rewritten whole", f, what)
			case err != nil:
				t.Errorf("%s: %s: %v", f, what, err)
			case !bytes.Equal(Marshal(got), Marshal(nb)):
				t.Errorf("%s: %s: the edit parses to another book", f, what)
			}
		}
		for _, p := range b.Peers {
			if len(b.Peers) > 1 {
				nb, err := RemoveMember(b, p.Name)
				check("remove "+p.Name, nb, err)
			}
			relay := !p.Relay
			nb, err := SetMember(b, p.Name, Change{Relay: &relay, Groups: &[]string{"g1"}})
			check("set "+p.Name, nb, err)
		}
		nb, err := AddMember(b, Member{Name: "added-member", PublicKey: testKey(t)})
		check("add", nb, err)
	}
}
