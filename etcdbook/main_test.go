package etcdbook

import (
	"os"
	"testing"

	"github.com/wgmesh/wgmesh/internal/etcdtest"
)

// etcdShared is the package's cluster, started by the first test that
// needs it.
var etcdShared = etcdtest.Shared{Name: "etcdbook"}

func TestMain(m *testing.M) { os.Exit(etcdShared.Run(m)) }

// needCluster returns the package's cluster; without etcd the test skips (fails
// on CI).
func needCluster(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	return etcdShared.Need(t)
}
