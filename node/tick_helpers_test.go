package node

import (
	"time"
)

// updatePaths runs one path round on a fresh device read, as the tick
// does, on the node's loop, for tests that step paths by hand.
func (n *Node) updatePaths(now time.Time) {
	n.do(func() {
		if n.dev == nil {
			return
		}
		dev, err := n.readDevice()
		if err != nil {
			return
		}
		n.updatePathsLocked(dev, now)
		n.publishStatusLocked(dev)
	})
}
