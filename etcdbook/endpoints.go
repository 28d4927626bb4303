package etcdbook

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Observed endpoints live under endpoints/KEY/OBSERVER, KEY the observed
// member's public key in hex, OBSERVER the name of the member that saw
// it, the value HOST:PORT. Each observer writes under a lease of its own,
// kept alive while it runs: a dead observer's entries expire. They are
// dynamic facts beside the book, never part of it: they only say where to
// send a member's packets, and WireGuard authenticates the member there.

// DefaultEndpointTTL is the lease of published endpoints.
const DefaultEndpointTTL = 15 * time.Second

// ErrNoEndpoint is returned by LookupEndpoint when no observer published
// one.
var ErrNoEndpoint = errors.New("no observed endpoint in etcd")

// Directory publishes and looks up observed endpoints.
type Directory struct {
	s        *Store
	observer string
	ttl      time.Duration

	mu        sync.Mutex
	lease     clientv3.LeaseID
	stopAlive context.CancelFunc
	published map[string]string // relative key → value, as last written
}

// NewDirectory returns the endpoint directory of the book s serves, for
// the member observer (its name). ttl is the lease of what it publishes;
// 0: DefaultEndpointTTL.
func NewDirectory(s *Store, observer string, ttl time.Duration) *Directory {
	if ttl <= 0 {
		ttl = DefaultEndpointTTL
	}
	return &Directory{s: s, observer: strings.ToLower(observer), ttl: ttl, published: map[string]string{}}
}

// SetObserver names the member that publishes, for a directory made
// before its name was known (a daemon learns it from the book it reads).
// Endpoints published under an earlier name go at the next Publish.
func (d *Directory) SetObserver(name string) {
	d.mu.Lock()
	d.observer = strings.ToLower(name)
	d.mu.Unlock()
}

func (d *Directory) String() string { return d.s.t.String() + "/" + EndpointsDir }

func endpointKey(k peerbook.Key, observer string) string {
	return EndpointsDir + hex.EncodeToString(k[:]) + "/" + observer
}

// LookupEndpoint returns the endpoint most recently published for the
// member with key k.
func (d *Directory) LookupEndpoint(ctx context.Context, k peerbook.Key) (netip.AddrPort, error) {
	rctx, cancel := context.WithTimeout(ctx, d.s.timeout)
	defer cancel()
	resp, err := d.s.cli.Get(rctx, d.s.t.Prefix+EndpointsDir+hex.EncodeToString(k[:])+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(8))
	if err != nil {
		return netip.AddrPort{}, d.s.requestError("looking up an endpoint", err)
	}
	for _, kv := range resp.Kvs {
		if ap, err := netip.ParseAddrPort(string(kv.Value)); err == nil && ap.Port() != 0 {
			return ap, nil
		}
	}
	return netip.AddrPort{}, ErrNoEndpoint
}

// Publish makes the published endpoints those of seen: new or changed
// ones are written, those no longer seen deleted, all under the
// observer's lease (granted on first use, and again if it expired).
func (d *Directory) Publish(ctx context.Context, seen map[peerbook.Key]netip.AddrPort) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]string{}
	for k, ap := range seen {
		want[endpointKey(k, d.observer)] = ap.String()
	}
	var ops []clientv3.Op
	for k, v := range want {
		if d.published[k] != v {
			ops = append(ops, clientv3.OpPut(d.s.t.Prefix+k, v, clientv3.WithLease(d.lease)))
		}
	}
	for k := range d.published {
		if _, ok := want[k]; !ok {
			ops = append(ops, clientv3.OpDelete(d.s.t.Prefix+k))
		}
	}
	if len(ops) == 0 && d.lease != 0 {
		return nil
	}
	if d.lease == 0 {
		if err := d.grantLocked(ctx); err != nil {
			return err
		}
		// A new lease: everything is written again under it.
		d.published = map[string]string{}
		return d.publishAllLocked(ctx, want)
	}
	err := d.txnLocked(ctx, ops)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// etcd was gone longer than the lease: start over.
		d.lease = 0
		if err := d.grantLocked(ctx); err != nil {
			return err
		}
		d.published = map[string]string{}
		return d.publishAllLocked(ctx, want)
	}
	if err != nil {
		return err
	}
	d.published = want
	return nil
}

func (d *Directory) publishAllLocked(ctx context.Context, want map[string]string) error {
	var ops []clientv3.Op
	for k, v := range want {
		ops = append(ops, clientv3.OpPut(d.s.t.Prefix+k, v, clientv3.WithLease(d.lease)))
	}
	if err := d.txnLocked(ctx, ops); err != nil {
		return err
	}
	d.published = want
	return nil
}

func (d *Directory) txnLocked(ctx context.Context, ops []clientv3.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		rctx, cancel := context.WithTimeout(ctx, d.s.timeout)
		_, err := d.s.cli.Txn(rctx).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return err
			}
			return d.s.requestError("publishing endpoints", err)
		}
		ops = ops[n:]
	}
	return nil
}

func (d *Directory) grantLocked(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, d.s.timeout)
	defer cancel()
	l, err := d.s.cli.Grant(rctx, int64(d.ttl/time.Second))
	if err != nil {
		return d.s.requestError("granting the endpoints lease", err)
	}
	if d.stopAlive != nil {
		d.stopAlive()
	}
	actx, stop := context.WithCancel(context.Background())
	ch, err := d.s.cli.KeepAlive(actx, l.ID)
	if err != nil {
		stop()
		return fmt.Errorf("keeping the endpoints lease alive: %w", err)
	}
	go func(id clientv3.LeaseID) {
		for range ch { // the client sends the answers here; drop them
		}
		// Closed: stopped, or the lease expired while etcd was out of
		// reach; then the next Publish grants a new one.
		d.mu.Lock()
		if d.lease == id {
			d.lease = 0
		}
		d.mu.Unlock()
	}(l.ID)
	d.lease, d.stopAlive = l.ID, stop
	return nil
}

// Close stops keeping the lease alive and revokes it, so that the
// endpoints this observer published go at once.
func (d *Directory) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopAlive != nil {
		d.stopAlive()
	}
	if d.lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.s.timeout)
	defer cancel()
	_, err := d.s.cli.Revoke(ctx, d.lease)
	d.lease = 0
	return err
}
