package etcdbook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A node's view of the mesh lives under views/NAME, NAME the member that
// reports it: for each other member the path it has (direct, relayed via
// NAME, no path, idle) and its last handshake, as JSON. Like observed
// endpoints it is written under a lease of the reporter's own, so a dead
// node's view expires. It holds public facts only: names, paths, times.

// ViewsDir holds the nodes' views, by reporter name.
const ViewsDir = "views/"

// maxView bounds one view record (a few dozen bytes per member).
const maxView = 256 << 10

// ViewRefresh is how often a view whose paths did not change is written
// again anyway (for its handshake times): a fleet's nodes would otherwise
// write to etcd on every tick.
const ViewRefresh = time.Minute

// maxViews bounds how many views Views reads.
const maxViews = 4096

// View is one node's view of the other members.
type View struct {
	// Name is the reporting member.
	Name string `json:"name"`
	// Time is when the node made the view.
	Time  time.Time  `json:"time"`
	Peers []PeerView `json:"peers"`
}

// PeerView is what the reporter sees of one member.
type PeerView struct {
	Name string `json:"name"`
	// Path is as in node.PeerStatus: "direct", "relayed via NAME",
	// "no path" or "idle".
	Path string `json:"path"`
	// LastHandshake is zero when none completed.
	LastHandshake time.Time `json:"last_handshake,omitzero"`
}

// ViewKey is the key of member name's view, relative to the prefix.
func ViewKey(name string) string { return ViewsDir + strings.ToLower(name) }

// ViewPublisher writes one node's view under a lease of its own.
type ViewPublisher struct {
	s   *Store
	ttl time.Duration

	mu        sync.Mutex
	lease     clientv3.LeaseID
	stopAlive context.CancelFunc
	key       string // relative key last written
	paths     string // the paths of the view last written
	written   time.Time
}

// NewViewPublisher returns a publisher of views into the book s serves;
// ttl is their lease, 0: DefaultEndpointTTL.
func NewViewPublisher(s *Store, ttl time.Duration) *ViewPublisher {
	if ttl <= 0 {
		ttl = DefaultEndpointTTL
	}
	return &ViewPublisher{s: s, ttl: ttl}
}

// Publish writes v under views/v.Name (deleting a view written under an
// earlier name), granting the lease on first use and again if it expired.
func (p *ViewPublisher) Publish(ctx context.Context, v View) error {
	if v.Name == "" {
		return errors.New("a view needs the reporter's name")
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxView {
		return fmt.Errorf("view of %s is %d bytes, more than %d", v.Name, len(data), maxView)
	}
	var paths strings.Builder
	for _, pv := range v.Peers {
		paths.WriteString(pv.Name + "\x00" + pv.Path + "\x00")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := ViewKey(v.Name)
	if p.lease != 0 && key == p.key && paths.String() == p.paths && time.Since(p.written) < ViewRefresh {
		return nil // nothing new; the lease keeps the last one alive
	}
	for attempt := 0; ; attempt++ {
		if p.lease == 0 {
			if err := p.grantLocked(ctx); err != nil {
				return err
			}
		}
		ops := []clientv3.Op{clientv3.OpPut(p.s.t.Prefix+key, string(data), clientv3.WithLease(p.lease))}
		if p.key != "" && p.key != key {
			ops = append(ops, clientv3.OpDelete(p.s.t.Prefix+p.key))
		}
		rctx, cancel := context.WithTimeout(ctx, p.s.timeout)
		_, err = p.s.cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			p.lease = 0 // etcd was gone longer than the lease: start over
			continue
		}
		if err != nil {
			return p.s.requestError("publishing the view", err)
		}
		p.key, p.paths, p.written = key, paths.String(), time.Now()
		return nil
	}
}

func (p *ViewPublisher) grantLocked(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, p.s.timeout)
	defer cancel()
	l, err := p.s.cli.Grant(rctx, int64(p.ttl/time.Second))
	if err != nil {
		return p.s.requestError("granting the view lease", err)
	}
	if p.stopAlive != nil {
		p.stopAlive()
	}
	actx, stop := context.WithCancel(context.Background())
	ch, err := p.s.cli.KeepAlive(actx, l.ID)
	if err != nil {
		stop()
		return fmt.Errorf("keeping the view lease alive: %w", err)
	}
	go func(id clientv3.LeaseID) {
		for range ch { // the client sends the answers here; drop them
		}
		p.mu.Lock()
		if p.lease == id {
			p.lease = 0
		}
		p.mu.Unlock()
	}(l.ID)
	p.lease, p.stopAlive = l.ID, stop
	return nil
}

// Close stops keeping the lease alive and revokes it: the view goes at
// once.
func (p *ViewPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopAlive != nil {
		p.stopAlive()
	}
	if p.lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.s.timeout)
	defer cancel()
	_, err := p.s.cli.Revoke(ctx, p.lease)
	p.lease = 0
	return err
}

// Views reads the published views, by reporter name. A record that is
// not a view (too large, not JSON, named for another key) is left out.
func (s *Store) Views(ctx context.Context) (map[string]View, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var resp *clientv3.GetResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.t.Prefix+ViewsDir, clientv3.WithPrefix(), clientv3.WithLimit(maxViews))
		return err
	})
	if err != nil {
		return nil, s.requestError("reading the views", err)
	}
	views := map[string]View{}
	for _, kv := range resp.Kvs {
		if v, ok := parseView(strings.TrimPrefix(string(kv.Key), s.t.Prefix), kv.Value); ok {
			views[v.Name] = v
		}
	}
	return views, nil
}

func parseView(rel string, data []byte) (View, bool) {
	var v View
	if len(data) > maxView || json.Unmarshal(data, &v) != nil || v.Name == "" || ViewKey(v.Name) != rel {
		return View{}, false
	}
	v.Name = strings.ToLower(v.Name)
	return v, true
}
