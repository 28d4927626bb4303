package etcdtest

import (
	"os"
	"sync"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// Shared is a test package's one cluster of three members: the first
// test that needs it starts it, TestMain stops it after m.Run.
//
//	var etcd = etcdtest.Shared{Name: "booksource"}
//	func TestMain(m *testing.M) { code := m.Run(); etcd.Stop(); os.Exit(code) }
//	func TestX(t *testing.T) { c := etcd.Need(t); ... }
type Shared struct {
	Name string // names the data directory

	once sync.Once
	dir  string
	c    *Cluster
	err  error
}

// Need returns the running cluster, starting it on first use. Without
// the etcd binary the test skips, or fails under CI (testutil.Tool).
func (s *Shared) Need(t testing.TB) *Cluster {
	t.Helper()
	testutil.Tool(t, Binary, "etcd-server")
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", "wgmesh-"+s.Name+"-etcd-"); s.err == nil {
			s.c, s.err = Start(s.dir, 3)
		}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.c
}

// Stop stops the cluster, if it was started, and removes its data.
func (s *Shared) Stop() {
	if s.c != nil {
		s.c.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// Run runs the package's tests and stops the cluster after them; a
// package's TestMain is os.Exit(shared.Run(m)).
func (s *Shared) Run(m *testing.M) int {
	defer s.Stop()
	return m.Run()
}
