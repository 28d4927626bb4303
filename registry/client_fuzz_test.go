package registry

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

// maxFuzzQueries bounds the queries one fuzzed List or Lookup may send.
const maxFuzzQueries = 64

// scriptedExchanger answers the k-th query with the k-th of its replies
// (cycling), made to match the query so that the client reads the records
// instead of dropping a stray packet. That is what a hostile registry, or
// anyone who can answer for it, can send.
type scriptedExchanger struct {
	replies [][]byte
	n       int
}

func (s *scriptedExchanger) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	if s.n >= maxFuzzQueries {
		return nil, errors.New("too many queries")
	}
	raw := s.replies[s.n%len(s.replies)]
	s.n++
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		return nil, err
	}
	r.Id, r.Response = m.Id, true
	r.Question = slices.Clone(m.Question)
	return r, nil
}

// splitReplies reads 2-byte length-prefixed DNS messages, as on TCP.
func splitReplies(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 && len(out) < 32 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if n > len(data) {
			n = len(data)
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// recordingExchanger answers from a real Server and keeps the replies, to
// make seeds.
type recordingExchanger struct {
	s    *Server
	edit func(q, r *dns.Msg)
	seed []byte
}

func (e *recordingExchanger) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	r := e.s.Answer(m)
	if e.edit != nil {
		e.edit(m, r)
	}
	b, err := r.Pack()
	if err != nil {
		return nil, err
	}
	e.seed = binary.BigEndian.AppendUint16(e.seed, uint16(len(b)))
	e.seed = append(e.seed, b...)
	return r, nil
}

// FuzzRegistryAnswers: whatever a registry answers, List and Lookup do not
// panic, send a bounded number of queries, and return only members with a
// usable endpoint, distinct keys named by the PTR records, and valid
// AllowedIPs; Lookup returns a usable endpoint or an error.
func FuzzRegistryAnswers(f *testing.F) {
	s := &Server{Zone: "mesh.", Members: unitMembers}
	ctx := context.Background()
	for _, edit := range []func(q, r *dns.Msg){
		nil,
		// A registry that sends no additional records (older wgsd).
		func(q, r *dns.Msg) {
			r.Extra = slices.DeleteFunc(r.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
		},
	} {
		rec := &recordingExchanger{s: s, edit: edit}
		if _, err := List(ctx, rec, "mesh."); err != nil {
			f.Fatal(err)
		}
		f.Add(rec.seed)
		rec = &recordingExchanger{s: s, edit: edit}
		if _, err := Lookup(ctx, rec, "mesh.", alpha.PublicKey); err != nil {
			f.Fatal(err)
		}
		f.Add(rec.seed)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		replies := splitReplies(data)
		if len(replies) == 0 {
			return
		}
		ex := &scriptedExchanger{replies: replies}
		members, _ := List(ctx, ex, "mesh.")
		if ex.n > maxFuzzQueries {
			t.Fatalf("%d queries", ex.n)
		}
		seen := map[peerbook.Key]bool{}
		for _, m := range members {
			if seen[m.PublicKey] {
				t.Fatalf("key %s listed twice", m.PublicKey.Short())
			}
			seen[m.PublicKey] = true
			checkEndpoint(t, m.Endpoint)
			for _, p := range m.AllowedIPs {
				if !p.IsValid() {
					t.Fatalf("member %s: invalid allowed IP %v", m.PublicKey.Short(), p)
				}
			}
			// A key comes from a label in the answers, never from nowhere.
			if !strings.Contains(strings.ToLower(string(data)), Label(m.PublicKey)) {
				t.Fatalf("member %s was never named by the registry", m.PublicKey.Short())
			}
		}

		ex = &scriptedExchanger{replies: replies}
		ep, err := Lookup(ctx, ex, "mesh.", alpha.PublicKey)
		if err == nil {
			checkEndpoint(t, ep)
		}
	})
}

func checkEndpoint(t *testing.T, ep netip.AddrPort) {
	t.Helper()
	if !ep.IsValid() || ep.Port() == 0 || ep.Addr().IsUnspecified() || ep.Addr().Is4In6() || ep.Addr().Zone() != "" {
		t.Fatalf("unusable endpoint %v", ep)
	}
}

// FuzzParseTXT: the TXT record of an instance never makes parseTXT panic;
// what it accepts survives formatting as allowed= and parsing again.
func FuzzParseTXT(f *testing.F) {
	k := alpha.PublicKey
	f.Add("txtvers=1\x00pub=" + k.String() + "\x00allowed=10.42.0.1/32,fd42:42::1/128,192.168.1.0/24")
	f.Add("txtvers=2\x00allowed=nonsense")
	f.Add("allowed=,,10.0.0.0/8,")
	f.Add("PUB=" + k.String())
	f.Add("pub=AAAA")
	f.Add("lan=192.168.1.5:51820,127.0.0.1:1,[fe80::1]:2,[fd00::1]:3")
	f.Fuzz(func(t *testing.T, joined string) {
		got, lan, err := parseTXT(strings.Split(joined, "\x00"), k)
		if err != nil {
			return
		}
		var parts []string
		for _, p := range got {
			if !p.IsValid() {
				t.Fatalf("invalid prefix %v", p)
			}
			parts = append(parts, p.String())
		}
		for _, ap := range lan {
			if !Usable(ap) {
				t.Fatalf("unusable LAN candidate %v kept", ap)
			}
		}
		again, lan2, err := parseTXT(append([]string{"txtvers=1", "allowed=" + strings.Join(parts, ",")}, lanStrings(lan)...), k)
		if err != nil || !slices.Equal(again, got) || !slices.Equal(lan2, lan) {
			t.Fatalf("allowed=%s parsed as %v, %v; want %v", strings.Join(parts, ","), again, err, got)
		}
	})
}

// FuzzParseLabel: an instance label maps to at most one key, and that key's
// label is the input (up to case).
func FuzzParseLabel(f *testing.F) {
	f.Add(Label(alpha.PublicKey))
	f.Add(strings.ToUpper(Label(beta.PublicKey)))
	f.Add(strings.Repeat("a", 56))
	f.Fuzz(func(t *testing.T, label string) {
		k, err := ParseLabel(label)
		if err != nil {
			return
		}
		if Label(k) != strings.ToLower(label) {
			t.Fatalf("ParseLabel(%q) = %s, whose label is %q", label, k.Short(), Label(k))
		}
		if got, ok := instanceKey(InstanceName("mesh.", k), "mesh."); !ok || got != k {
			t.Fatalf("instance name of %s does not map back", k.Short())
		}
	})
}
