package etcdbook

import (
	"fmt"
	"os"
	"testing"

	"github.com/wgmesh/wgmesh/internal/etcdtest"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// cluster is the package's etcd cluster, started once in TestMain; nil
// when etcd is not installed (then each test needing it skips, or fails
// under CI).
var cluster *etcdtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := etcdtest.Find(); err == nil {
		dir, err := os.MkdirTemp("", "wgmesh-etcdbook-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		c, err := etcdtest.Start(dir, 3)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Stop()
		cluster = c
	}
	return m.Run()
}

// needCluster returns the cluster; without etcd the test skips (fails on
// CI).
func needCluster(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	if cluster == nil {
		testutil.Tool(t, etcdtest.Binary, "etcd-server")
		t.Fatal("etcd is installed but the cluster did not start")
	}
	return cluster
}
