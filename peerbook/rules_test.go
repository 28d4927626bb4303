package peerbook

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

func TestRulesParsed(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/rules.toml")
	if len(b.Rules) != 4 {
		t.Fatalf("%d rules, want 4", len(b.Rules))
	}
	r := b.Rules[0]
	want := []PortRange{{ProtoTCP, 22, 22}, {ProtoTCP, 8000, 8100}, {ProtoUDP, 53, 53}, {Proto: ProtoICMP}}
	if len(r.Ports) != len(want) {
		t.Fatalf("ports %v", r.Ports)
	}
	for i := range want {
		if r.Ports[i] != want[i] {
			t.Errorf("port %d = %+v, want %+v", i, r.Ports[i], want[i])
		}
	}
	if r.From[0] != (Selector{Kind: SelectGroup, Name: "staff"}) || r.To[0] != (Selector{Kind: SelectGroup, Name: "servers"}) {
		t.Errorf("selectors %+v -> %+v", r.From, r.To)
	}
	if r.Line != 29 {
		t.Errorf("line %d, want 29", r.Line)
	}
	if s := b.Rules[1].From[0]; s.Kind != SelectMember || s.Name != "ci" {
		t.Errorf("from %+v", s)
	}
	if s := b.Rules[2].From[0]; s.Kind != SelectAll {
		t.Errorf("from %+v", s)
	}
	sub := b.Rules[3].To[0]
	if sub.Kind != SelectSubnet || sub.Subnet != netip.MustParsePrefix("192.168.10.0/25") {
		t.Errorf("to %+v", sub)
	}
	if got := b.Members(sub); len(got) != 1 || b.Peers[got[0]].Name != "db" {
		t.Errorf("Members(%s) = %v, want db", sub, got)
	}
	if got := b.Members(Selector{Kind: SelectGroup, Name: "STAFF"}); len(got) != 1 || b.Peers[got[0]].Name != "laptop" {
		t.Errorf("groups are not compared ignoring case: %v", got)
	}
}

func TestCompareRules(t *testing.T) {
	old := mustParseFile(t, "../testdata/good/rules.toml")
	moved := mustParseFile(t, "../testdata/good/rules.toml")
	for i := range moved.Rules {
		moved.Rules[i].Line += 7
	}
	if d := Compare(old, moved); !d.Empty() {
		t.Errorf("rules moving in the file is a change: %+v", d)
	}
	for name, change := range map[string]func(b *Book){
		"port":    func(b *Book) { b.Rules[1].Ports[0].Hi = 23 },
		"from":    func(b *Book) { b.Rules[1].From[0].Name = "laptop" },
		"removed": func(b *Book) { b.Rules = b.Rules[:3] },
		"order":   func(b *Book) { b.Rules[0], b.Rules[1] = b.Rules[1], b.Rules[0] },
		"none":    func(b *Book) { b.Rules = nil },
	} {
		nb := mustParseFile(t, "../testdata/good/rules.toml")
		change(nb)
		d := Compare(old, nb)
		if !d.RulesChanged || d.Empty() || d.MeshChanged || len(d.Changed) > 0 {
			t.Errorf("%s: %+v", name, d)
		}
	}
}

// TestMembershipKeepsRules: a membership change keeps the rules, both in
// the Book and in the edited text, and removing a member a rule names is
// refused with the rule's problem.
func TestMembershipKeepsRules(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/rules.toml")
	nb, err := AddMember(b, Member{Name: "printer", PublicKey: Key{7}})
	if err != nil {
		t.Fatal(err)
	}
	if !RulesEqual(b.Rules, nb.Rules) {
		t.Error("AddMember changed the rules")
	}
	nb.Rules[0].Ports[0].Lo = 1 // the copy must not share lists with b
	if b.Rules[0].Ports[0].Lo != 22 {
		t.Error("AddMember's book shares rule lists with its argument")
	}
	nb.Rules[0].Ports[0].Lo = 22

	text := readFile(t, "../testdata/good/rules.toml")
	out, inPlace := EditText(text, b, nb)
	if !inPlace || !strings.Contains(string(out), "# anyone may ping the servers") {
		t.Errorf("edit in place %v, comments lost:\n%s", inPlace, out)
	}
	got, err := Parse("book.toml", out)
	if err != nil || !RulesEqual(got.Rules, b.Rules) {
		t.Fatalf("edited text: %v, rules %v", err, got)
	}

	_, err = RemoveMember(b, "ci")
	if err == nil || !strings.Contains(err.Error(), `rule #2: from "ci" is not a member of the book`) {
		t.Errorf("removing a member a rule names: %v", err)
	}
}

func TestMarshalRules(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/rules.toml")
	text := string(Marshal(b))
	for _, want := range []string{
		"[[rule]]\nfrom = [\"group:staff\"]\nto = [\"group:servers\"]\nports = [\"tcp:22\", \"tcp:8000-8100\", \"udp:53\", \"icmp\"]\n",
		"to = [\"subnet:192.168.10.0/25\"]\n",
		"from = [\"*\"]\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Marshal lacks %q:\n%s", want, text)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
