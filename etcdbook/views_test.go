package etcdbook

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A published view reads back by name, a rename moves it, a record that
// is not a view is left out, and Close takes it away at once.
func TestViewsPublishRead(t *testing.T) {
	s := connect(t, "views")
	ctx := context.Background()
	p := NewViewPublisher(s, 0)
	defer p.Close()
	now := time.Now().UTC().Truncate(time.Second)
	v := View{Name: "alpha", Time: now, Peers: []PeerView{{Name: "beta", Path: "direct", LastHandshake: now}, {Name: "gamma", Path: "no path"}}}
	if err := p.Publish(ctx, v); err != nil {
		t.Fatal(err)
	}
	// Not views: a record under another name's key, and junk.
	if _, err := s.cli.Put(ctx, s.t.Prefix+ViewKey("mallory"), `{"name":"beta","peers":[]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, s.t.Prefix+ViewKey("junk"), `not json`); err != nil {
		t.Fatal(err)
	}
	views, err := s.Views(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 {
		t.Fatalf("views %v, want alpha's only", views)
	}
	got := views["alpha"]
	if len(got.Peers) != 2 || got.Peers[0].Path != "direct" || !got.Peers[0].LastHandshake.Equal(now) || got.Peers[1].Path != "no path" {
		t.Fatalf("alpha's view read back as %+v", got)
	}
	// The same paths again: not written (a fleet would write every tick);
	// a changed path is.
	rev := func() int64 {
		resp, err := s.cli.Get(ctx, s.t.Prefix+ViewKey("alpha"))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("alpha's view: %v %v", resp, err)
		}
		return resp.Kvs[0].ModRevision
	}
	r0 := rev()
	v.Time = v.Time.Add(5 * time.Second)
	v.Peers[0].LastHandshake = v.Time
	if err := p.Publish(ctx, v); err != nil {
		t.Fatal(err)
	}
	if rev() != r0 {
		t.Error("a view with the same paths was written again at once")
	}
	v.Peers[1].Path = "relayed via beta"
	if err := p.Publish(ctx, v); err != nil {
		t.Fatal(err)
	}
	if rev() == r0 {
		t.Error("a view with a changed path was not written")
	}
	v.Name = "alpha2"
	if err := p.Publish(ctx, v); err != nil {
		t.Fatal(err)
	}
	if views, _ = s.Views(ctx); len(views) != 1 || views["alpha2"].Name != "alpha2" {
		t.Fatalf("after the rename: %v", views)
	}
	resp, err := s.cli.Get(ctx, s.t.Prefix+ViewKey("alpha2"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("view not under a lease: %v %v", resp, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err = s.cli.Get(ctx, s.t.Prefix+ViewsDir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 2 { // the two records that are not views stay
		t.Fatalf("%d records under views/ after Close, want the 2 non-views", resp.Count)
	}
}
