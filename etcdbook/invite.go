package etcdbook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Invitations over etcd are single-use and expire: `invite` stores the
// member to add under invites/ID, where ID is a hash of a random token
// that only the invitation file holds, with a lease of the invitation's
// lifetime; `join` generates the member's key on the new machine and adds
// the member in the transaction that deletes the invitation. A used or
// expired invitation is gone, and no private key ever leaves the joining
// machine.

// ErrInviteGone is returned by UseInvite for an invitation that was used
// already, expired, or never existed.
var ErrInviteGone = errors.New("invitation used already or expired")

// NewInviteToken returns a random invitation token.
func NewInviteToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// inviteKey is the key of token's invitation, relative to the prefix: a
// hash, so that whoever can list the keys cannot use them.
func inviteKey(token string) string {
	sum := sha256.Sum256([]byte("wgmesh-invite:" + token))
	return InvitesDir + hex.EncodeToString(sum[:16])
}

// invited is the stored form of the member an invitation adds.
type invited struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses,omitempty"`
	Endpoint  string   `json:"endpoint,omitempty"`
	Subnets   []string `json:"subnets,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Registry  bool     `json:"registry,omitempty"`
	Relay     bool     `json:"relay,omitempty"`
}

func toInvited(m peerbook.Member) invited {
	v := invited{Name: m.Name, Groups: m.Groups, Registry: m.Registry, Relay: m.Relay}
	if !m.Endpoint.IsZero() {
		v.Endpoint = m.Endpoint.String()
	}
	for _, a := range m.Addresses {
		v.Addresses = append(v.Addresses, a.String())
	}
	for _, p := range m.Subnets {
		v.Subnets = append(v.Subnets, p.String())
	}
	return v
}

func (v invited) member() (peerbook.Member, error) {
	m := peerbook.Member{Name: v.Name, Groups: v.Groups, Registry: v.Registry, Relay: v.Relay}
	var err error
	if v.Endpoint != "" {
		if m.Endpoint, err = peerbook.ParseEndpoint(v.Endpoint); err != nil {
			return m, err
		}
	}
	for _, s := range v.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return m, err
		}
		m.Addresses = append(m.Addresses, a)
	}
	for _, s := range v.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return m, err
		}
		m.Subnets = append(m.Subnets, p)
	}
	return m, nil
}

// PutInvite stores an invitation to add m (its PublicKey is ignored: the
// joining machine makes its own) that expires after ttl. It refuses a
// member the book could not take now, and a signed book (the joining
// machine cannot sign).
func (s *Store) PutInvite(ctx context.Context, token string, m peerbook.Member, ttl time.Duration) error {
	if ttl < time.Second {
		return fmt.Errorf("an invitation lives at least a second (got %v)", ttl)
	}
	snap, err := s.Load(ctx)
	if err != nil {
		return err
	}
	b, _, err := snap.Book(s.t.String(), nil)
	if err != nil {
		return err
	}
	if snap.HeadSig != nil {
		return fmt.Errorf("%s: %w: the new machine could not sign its change when it joins; add the member with book add and a signing key instead", s.t, ErrSigned)
	}
	probe, err := peerbook.GeneratePrivateKey()
	if err != nil {
		return err
	}
	m.PublicKey = probe.Public()
	if _, err := peerbook.AddMember(b, m); err != nil {
		return err
	}
	val, err := json.Marshal(toInvited(m))
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lease, err := s.cli.Grant(rctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return s.requestError("storing the invitation", err)
	}
	key := s.t.Prefix + inviteKey(token)
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return s.requestError("storing the invitation", err)
	}
	if !resp.Succeeded {
		return errors.New("an invitation with this token exists already")
	}
	return nil
}

// UseInvite adds the member of token's invitation with public key k and
// deletes the invitation, in one transaction: of two machines joining with
// the same invitation, one wins and the other gets ErrInviteGone.
func (s *Store) UseInvite(ctx context.Context, token string, k peerbook.Key) (*peerbook.Book, *peerbook.Peer, error) {
	key := s.t.Prefix + inviteKey(token)
	var name string
	nb, err := s.update(ctx, func(ctx context.Context, b *peerbook.Book, w *write) (*peerbook.Book, error) {
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		resp, err := s.cli.Get(rctx, key)
		if err != nil {
			return nil, s.requestError("reading the invitation", err)
		}
		if len(resp.Kvs) == 0 {
			return nil, ErrInviteGone
		}
		kv := resp.Kvs[0]
		var v invited
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("the stored invitation is damaged: %w", err)
		}
		m, err := v.member()
		if err != nil {
			return nil, fmt.Errorf("the stored invitation is damaged: %w", err)
		}
		m.PublicKey, name = k, m.Name
		w.extraCmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}
		w.extraOps = []clientv3.Op{clientv3.OpDelete(key)}
		return peerbook.AddMember(b, m)
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	p, _ := nb.PeerByName(name)
	return nb, p, nil
}
