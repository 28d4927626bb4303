package ui

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/etcdbook"
)

type fakeViews struct {
	views map[string]etcdbook.View
	err   error
}

func (f fakeViews) Views(context.Context) (map[string]etcdbook.View, error) { return f.views, f.err }

// The matrix is every member by every member, each cell what the row's
// member reports of the column's; no report is an empty path, the
// diagonal "self", and a view from no member of the book is left out.
func TestMatrix(t *testing.T) {
	f := newFixture(t, nil)
	msg := errorOf(t, f.want(http.StatusNotFound, request{method: "GET", path: "/api/matrix"}))
	if !strings.Contains(msg, "etcd") {
		t.Errorf("no view source: %q", msg)
	}
	f.srv.Views = fakeViews{err: errors.New("no etcd member answered")}
	f.want(http.StatusServiceUnavailable, request{method: "GET", path: "/api/matrix"})

	hs := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC)
	f.srv.Views = fakeViews{views: map[string]etcdbook.View{
		"a":       {Name: "a", Time: hs, Peers: []etcdbook.PeerView{{Name: "b", Path: "relayed via c", LastHandshake: hs}}},
		"mallory": {Name: "mallory", Time: hs, Peers: []etcdbook.PeerView{{Name: "a", Path: "direct"}}},
	}}
	var m Matrix
	if err := json.Unmarshal(f.want(http.StatusOK, request{method: "GET", path: "/api/matrix"}), &m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.Members, ",") != "a,b" || len(m.Rows) != 2 {
		t.Fatalf("matrix = %+v, want rows and columns a, b", m)
	}
	cell := func(i, j int) MatrixCell { return m.Rows[i].Cells[j] }
	if !m.Rows[0].Reported.Equal(hs) || !m.Rows[1].Reported.IsZero() {
		t.Errorf("reported: %v, %v", m.Rows[0].Reported, m.Rows[1].Reported)
	}
	if c := cell(0, 1); c.Name != "b" || c.Path != "relayed via c" || !c.LastHandshake.Equal(hs) {
		t.Errorf("a's view of b = %+v", c)
	}
	if cell(0, 0).Path != "self" || cell(1, 1).Path != "self" {
		t.Errorf("diagonal = %+v, %+v", cell(0, 0), cell(1, 1))
	}
	if c := cell(1, 0); c.Path != "" || !c.LastHandshake.IsZero() {
		t.Errorf("b reported nothing, yet its cell for a is %+v", c)
	}
}

// With a view source the page has the matrix section, without it not.
func TestPageMatrix(t *testing.T) {
	f := newFixture(t, nil)
	if page := string(f.want(http.StatusOK, request{method: "GET", path: "/"})); strings.Contains(page, `id="matrix"`) {
		t.Error("page without a view source shows a matrix")
	}
	f.srv.Views = fakeViews{}
	if page := string(f.want(http.StatusOK, request{method: "GET", path: "/"})); !strings.Contains(page, `id="matrix"`) || !strings.Contains(page, `data-matrix="yes"`) {
		t.Error("page with a view source has no matrix section")
	}
}
