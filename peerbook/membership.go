package peerbook

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The membership operations below are pure functions on a Book, shared by
// every front end that changes a book (the CLI today): each returns a new
// Book with serial raised by one, validated as a whole by the same rules as
// Parse, and leaves its argument untouched. Their errors speak of members
// and values, not of command-line flags.

// Member describes a member to add.
type Member struct {
	Name      string
	PublicKey Key
	// Addresses are used as given; every mesh network that none of them
	// falls in gets its next free address (NextFreeAddr).
	Addresses []netip.Addr
	Endpoint  Endpoint
	// Endpoints, instead of Endpoint, lists several in the order to try.
	Endpoints []Endpoint
	Subnets   []netip.Prefix
	Groups    []string
	Registry  bool
	Relay     bool
	Exit      bool
}

// ErrNoMember is returned by Remove and Set for a name the book does not
// have.
var ErrNoMember = errors.New("no such member")

// AddMember returns b with m appended as a new member. It refuses a name or
// key already in the book, a full network and anything Parse would refuse.
func AddMember(b *Book, m Member) (*Book, error) {
	if p, ok := findName(b, m.Name); ok {
		as := ""
		if p.Name != m.Name {
			as = fmt.Sprintf(" (as %q; names are compared ignoring case)", p.Name)
		}
		return nil, fmt.Errorf("member %q already exists%s; pick another name, or change it with set", m.Name, as)
	}
	for i := range b.Peers {
		if b.Peers[i].PublicKey == m.PublicKey {
			return nil, fmt.Errorf("public key %s is already used by member %q; every member needs its own key pair", m.PublicKey, b.Peers[i].Name)
		}
	}
	p := Peer{
		Name:      m.Name,
		PublicKey: m.PublicKey,
		Endpoint:  m.Endpoint,
		Endpoints: slices.Clone(m.Endpoints),
		Exit:      m.Exit,
		Subnets:   slices.Clone(m.Subnets),
		Groups:    slices.Clone(m.Groups),
		Registry:  m.Registry,
		Relay:     m.Relay,
	}
	for _, n := range b.Mesh.Networks {
		given := false
		for _, a := range m.Addresses {
			if n.Contains(a) {
				p.Addresses = append(p.Addresses, a)
				given = true
			}
		}
		if given {
			continue
		}
		a, err := NextFreeAddr(b, n)
		if err != nil {
			return nil, err
		}
		p.Addresses = append(p.Addresses, a)
	}
	for _, a := range m.Addresses {
		if _, ok := b.NetworkOf(a); !ok {
			return nil, fmt.Errorf("address %s is outside the mesh networks (%s)", a, joinPrefixes(b.Mesh.Networks))
		}
	}
	if len(p.Endpoints) > 0 {
		if !m.Endpoint.IsZero() {
			return nil, errors.New("give either the endpoint or the endpoints list, not both")
		}
		p.Endpoint = p.Endpoints[0]
	} else {
		p.Endpoints = nil
	}
	nb := cloneBook(b)
	nb.Peers = append(nb.Peers, p)
	return finish(nb)
}

// RemoveMember returns b without the member called name.
func RemoveMember(b *Book, name string) (*Book, error) {
	i, err := indexOf(b, name)
	if err != nil {
		return nil, err
	}
	if len(b.Peers) == 1 {
		return nil, fmt.Errorf("member %q is the only member; a book needs at least one", b.Peers[i].Name)
	}
	nb := cloneBook(b)
	nb.Peers = slices.Delete(nb.Peers, i, i+1)
	return finish(nb)
}

// Change lists what SetMember changes; nil fields stay as they are.
type Change struct {
	PublicKey *Key
	Addresses *[]netip.Addr
	Endpoint  *Endpoint // the zero Endpoint removes it (and Endpoints)
	// Endpoints replaces the member's endpoints; an empty list removes
	// them (and Endpoint).
	Endpoints  *[]Endpoint
	ListenPort *uint16 // 0 removes it
	Subnets    *[]netip.Prefix
	Groups     *[]string
	Registry   *bool
	Relay      *bool
	Exit       *bool
}

// SetMember returns b with the member called name changed as ch says. A
// change that changes nothing is refused, so that serial is not raised for
// nothing.
func SetMember(b *Book, name string, ch Change) (*Book, error) {
	i, err := indexOf(b, name)
	if err != nil {
		return nil, err
	}
	nb := cloneBook(b)
	p := &nb.Peers[i]
	if ch.PublicKey != nil {
		for j := range b.Peers {
			if j != i && b.Peers[j].PublicKey == *ch.PublicKey {
				return nil, fmt.Errorf("public key %s is already used by member %q; every member needs its own key pair", *ch.PublicKey, b.Peers[j].Name)
			}
		}
		p.PublicKey = *ch.PublicKey
	}
	if ch.Addresses != nil {
		p.Addresses = slices.Clone(*ch.Addresses)
	}
	if ch.Endpoint != nil && ch.Endpoints != nil {
		return nil, errors.New("set either the endpoint or the endpoints list, not both")
	}
	if ch.Endpoint != nil {
		p.Endpoint, p.Endpoints = *ch.Endpoint, nil
	}
	if ch.Endpoints != nil {
		p.Endpoints = slices.Clone(*ch.Endpoints)
		p.Endpoint = Endpoint{}
		if len(p.Endpoints) > 0 {
			p.Endpoint = p.Endpoints[0]
		} else {
			p.Endpoints = nil
		}
	}
	if ch.ListenPort != nil {
		p.ListenPort = *ch.ListenPort
	}
	if ch.Subnets != nil {
		p.Subnets = slices.Clone(*ch.Subnets)
	}
	if ch.Groups != nil {
		p.Groups = slices.Clone(*ch.Groups)
	}
	if ch.Registry != nil {
		p.Registry = *ch.Registry
	}
	if ch.Relay != nil {
		p.Relay = *ch.Relay
	}
	if ch.Exit != nil {
		p.Exit = *ch.Exit
	}
	if p.Equal(&b.Peers[i]) {
		return nil, fmt.Errorf("member %q already has these settings; nothing to change", p.Name)
	}
	return finish(nb)
}

func findName(b *Book, name string) (*Peer, bool) {
	for i := range b.Peers {
		if strings.EqualFold(b.Peers[i].Name, name) {
			return &b.Peers[i], true
		}
	}
	return nil, false
}

func indexOf(b *Book, name string) (int, error) {
	for i := range b.Peers {
		if strings.EqualFold(b.Peers[i].Name, name) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("member %q: %w in the book", name, ErrNoMember)
}

// cloneBook copies b deeply enough that changing the copy's member list or
// one member's lists leaves b alone.
func cloneBook(b *Book) *Book {
	nb := *b
	nb.Mesh.Networks = slices.Clone(b.Mesh.Networks)
	nb.Peers = make([]Peer, len(b.Peers))
	for i, p := range b.Peers {
		p.Addresses = slices.Clone(p.Addresses)
		p.Subnets = slices.Clone(p.Subnets)
		p.Groups = slices.Clone(p.Groups)
		p.Endpoints = slices.Clone(p.Endpoints)
		nb.Peers[i] = p
	}
	nb.Rules = make([]Rule, len(b.Rules))
	for i, r := range b.Rules {
		r.From = slices.Clone(r.From)
		r.To = slices.Clone(r.To)
		r.Ports = slices.Clone(r.Ports)
		nb.Rules[i] = r
	}
	return &nb
}

// finish raises the serial and validates the whole book with Parse's rules
// by parsing its canonical text.
func finish(nb *Book) (*Book, error) {
	nb.Serial++
	if err := Validate(nb); err != nil {
		return nil, err
	}
	return nb, nil
}

// Validate checks b with every rule Parse applies to a file. A refusal is an
// *Error whose problems have no line: b has no file, and the lines of its
// canonical text would mislead.
func Validate(b *Book) error {
	_, err := Parse(b.Source, Marshal(b))
	var perr *Error
	if errors.As(err, &perr) {
		for i := range perr.Problems {
			perr.Problems[i].Line = 0
			perr.Problems[i].Msg = stripLineRefs(perr.Problems[i].Msg)
		}
	}
	return err
}

// stripLineRefs drops " (line N)" from a message about the canonical text.
func stripLineRefs(msg string) string {
	for {
		i := strings.Index(msg, " (line ")
		if i < 0 {
			return msg
		}
		j := strings.IndexByte(msg[i:], ')')
		if j < 0 {
			return msg
		}
		msg = msg[:i] + msg[i+j+1:]
	}
}
