package etcdbook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Keys under the prefix.
const (
	HeadKey      = "head"
	HeadSigKey   = "head.sig"
	MeshKey      = "mesh"
	RulesKey     = "rules"
	MembersDir   = "members/"
	InvitesDir   = "invites/"
	EndpointsDir = "endpoints/"
)

// headMagic starts every head record: the layout's name and version.
const headMagic = "wgmesh-etcd-book 1"

// maxRecord bounds one record: a member or the mesh settings take a few
// hundred bytes; the rules of a large book some kilobytes.
const maxRecord = 1 << 20

// Records are the parts of a book, by key relative to the prefix: mesh,
// rules and members/NAME.
type Records map[string][]byte

// IsRecord reports whether rel (a key relative to the prefix) is a part of
// the book.
func IsRecord(rel string) bool {
	return rel == MeshKey || rel == RulesKey || (strings.HasPrefix(rel, MembersDir) && len(rel) > len(MembersDir))
}

// MemberKey is the key of member name's record, relative to the prefix.
func MemberKey(name string) string { return MembersDir + strings.ToLower(name) }

// FromBook splits b into its records.
func FromBook(b *peerbook.Book) Records {
	r := Records{MeshKey: peerbook.MarshalMesh(b)}
	for i := range b.Peers {
		r[MemberKey(b.Peers[i].Name)] = peerbook.MarshalPeer(&b.Peers[i])
	}
	if rules := peerbook.MarshalRules(b.Rules); rules != nil {
		r[RulesKey] = rules
	}
	return r
}

// keys returns the record keys in the order the book text joins them:
// mesh, the members by name, rules.
func (r Records) keys() []string {
	ks := make([]string, 0, len(r))
	for k := range r {
		if strings.HasPrefix(k, MembersDir) {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	if _, ok := r[MeshKey]; ok {
		ks = append([]string{MeshKey}, ks...)
	}
	if _, ok := r[RulesKey]; ok {
		ks = append(ks, RulesKey)
	}
	return ks
}

// Digest is the SHA-256 of every record with its key, in key order: what
// a head vouches for.
func (r Records) Digest() [sha256.Size]byte {
	ks := make([]string, 0, len(r))
	for k := range r {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	h := sha256.New()
	for _, k := range ks {
		v := r[k]
		h.Write(strconv.AppendInt(nil, int64(len(k)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(k))
		h.Write(strconv.AppendInt(nil, int64(len(v)), 10))
		h.Write([]byte{':'})
		h.Write(v)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// Head is the record that commits a version of the book: its serial and
// the digest of its records. A signed book signs the head's text.
type Head struct {
	Serial uint64
	Digest [sha256.Size]byte
}

// Marshal returns the head's text.
func (h Head) Marshal() []byte {
	return []byte(headMagic + "\nserial " + strconv.FormatUint(h.Serial, 10) + "\nrecords " + hex.EncodeToString(h.Digest[:]) + "\n")
}

// ParseHead reads a head record.
func ParseHead(data []byte) (Head, error) {
	var h Head
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 || lines[0] != headMagic {
		return h, fmt.Errorf("not a head record of this version (want %q, then serial and records lines)", headMagic)
	}
	s, ok := strings.CutPrefix(lines[1], "serial ")
	n, err := strconv.ParseUint(s, 10, 64)
	if !ok || err != nil {
		return h, errors.New("head: bad serial line")
	}
	d, ok := strings.CutPrefix(lines[2], "records ")
	raw, err := hex.DecodeString(d)
	if !ok || err != nil || len(raw) != sha256.Size {
		return h, errors.New("head: bad records line (want a hex SHA-256)")
	}
	h.Serial = n
	copy(h.Digest[:], raw)
	return h, nil
}

// ErrDigest is wrapped by Assemble's error when the records are not those
// the head vouches for.
var ErrDigest = errors.New("records do not match the head")

// Assemble checks the records against head and builds the book from them.
// shown is the book's address, for messages; a problem in a record is
// reported as shown/KEY:LINE. The text returned is what was parsed.
func Assemble(shown string, head Head, recs Records) (*peerbook.Book, []byte, error) {
	if recs.Digest() != head.Digest {
		return nil, nil, fmt.Errorf("%s: %w: a record was changed without a new head (by hand, or by a write cut short); change the book with wgmesh book commands, or store it again with wgmesh book push --force", shown, ErrDigest)
	}
	var probs []peerbook.Problem
	for _, k := range recs.keys() {
		if msg := checkRecord(k, recs[k]); msg != "" {
			probs = append(probs, peerbook.Problem{File: shown + "/" + k, Msg: msg})
		}
	}
	if _, ok := recs[MeshKey]; !ok {
		probs = append(probs, peerbook.Problem{File: shown + "/" + MeshKey, Msg: "missing: the book has no mesh settings"})
	}
	if len(probs) > 0 {
		return nil, nil, &peerbook.Error{Problems: probs}
	}

	// Join the records; spans maps the text's lines back to them.
	type span struct {
		first int // first line of the record in the text
		key   string
	}
	var w bytes.Buffer
	w.WriteString("format = " + strconv.Itoa(peerbook.CurrentFormat) + "\nserial = " + strconv.FormatUint(head.Serial, 10) + "\n")
	line := 3
	var spans []span
	for _, k := range recs.keys() {
		w.WriteString("\n")
		line++
		spans = append(spans, span{line, k})
		v := recs[k]
		w.Write(v)
		line += bytes.Count(v, []byte("\n"))
	}
	text := w.Bytes()
	book, err := peerbook.Parse(shown, text)
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		for i := range perr.Problems {
			p := &perr.Problems[i]
			p.Msg = peerbook.WithoutLineRefs(p.Msg)
			if p.Line == 0 {
				continue
			}
			j, _ := slices.BinarySearchFunc(spans, p.Line, func(s span, l int) int { return s.first - l })
			if j < len(spans) && spans[j].first == p.Line {
				j++
			}
			if j == 0 {
				p.File, p.Line = shown+"/"+HeadKey, 0
				continue
			}
			s := spans[j-1]
			p.File, p.Line = shown+"/"+s.key, p.Line-s.first+1
		}
		return nil, nil, perr
	}
	if err != nil {
		return nil, nil, err
	}
	return book, text, nil
}

// checkRecord makes sure a record holds only what its key says, so that
// no record can change another part of the book once joined: mesh only
// [mesh], a member record exactly one [[peer]] named as its key, rules
// only [[rule]] tables. Values are checked later, by Parse.
func checkRecord(key string, v []byte) string {
	if len(v) > maxRecord {
		return fmt.Sprintf("%d bytes, over the limit of %d for one record", len(v), maxRecord)
	}
	if len(v) == 0 || v[len(v)-1] != '\n' {
		return "a record must end with a newline"
	}
	var doc map[string]any
	if err := toml.Unmarshal(v, &doc); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, _ := derr.Position()
			return fmt.Sprintf("line %d: not valid TOML: %s", row, derr.Error())
		}
		return "not valid TOML: " + err.Error()
	}
	want := "mesh"
	switch {
	case key == RulesKey:
		want = "rule"
	case strings.HasPrefix(key, MembersDir):
		want = "peer"
	}
	for k := range doc {
		if k != want {
			return fmt.Sprintf("holds %q; a %s record holds only its %s table", k, strings.TrimSuffix(key, "/"), tableName(want))
		}
	}
	if _, ok := doc[want]; !ok {
		return fmt.Sprintf("holds no %s table", tableName(want))
	}
	if want == "peer" {
		ps, ok := doc["peer"].([]any)
		if !ok || len(ps) != 1 {
			return "a member record holds exactly one [[peer]] table"
		}
		t, _ := ps[0].(map[string]any)
		name, _ := t["name"].(string)
		if MemberKey(name) != key {
			return fmt.Sprintf("holds member %q; the key of a member's record is %s + its name in lower case", name, MembersDir)
		}
	}
	return ""
}

func tableName(t string) string {
	if t == "mesh" {
		return "[mesh]"
	}
	return "[[" + t + "]]"
}
