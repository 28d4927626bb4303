package node

import (
	"time"
)

// updatePaths runs one path round on a fresh device read, as the tick
// does, for tests that step paths by hand.
func (n *Node) updatePaths(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev == nil {
		return
	}
	dev, err := n.readDevice()
	if err != nil {
		return
	}
	n.updatePathsLocked(dev, now)
	n.publishStatusLocked(dev)
}

// tickedStatus returns n's status once it has been published from a device
// read made after the call: the next tick's at the latest. Status may be
// one tick old; tests that check what traffic just did ask this instead.
func tickedStatus(n *Node) Status {
	since := time.Now()
	for deadline := since.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s := n.snap.Load(); s == nil || !s.dev.read.Before(since) {
			break
		}
	}
	return n.Status()
}
