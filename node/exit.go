package node

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/wgmesh/wgmesh/hostnet"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Exit members. A member with exit = true may forward non-mesh traffic for
// the others; a node started with Config.ExitNode sends it all there. The
// exit member's peer entry gets the default prefixes (0.0.0.0/0, ::/0) on
// top of its own, so WireGuard routes every destination no other member
// claims to it; in TUN mode hostnet adds default routes through the
// interface in a table of their own, looked up for packets without the
// device's firewall mark (the WireGuard sockets carry it, so the underlay
// endpoints stay reachable), as wg-quick does. On the exit member, TUN mode
// forwards and masquerades traffic from the mesh to any other interface;
// WireGuard accepts from each member only the addresses the book gives it,
// so only members are forwarded. Should the chosen member lose exit = true
// or leave the book, its default prefixes go and non-mesh traffic is
// dropped, not sent around the mesh: an exit node fails closed.

// defaultPrefixes route everything.
var defaultPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// checkExitNode checks Config.ExitNode against book at Up.
func (n *Node) checkExitNode(book *peerbook.Book) error {
	name := n.cfg.ExitNode
	if name == "" {
		return nil
	}
	if n.cfg.Mode != ModeTUN {
		return errors.New("node: an exit node in netstack mode is not built yet; use TUN mode")
	}
	p, ok := book.PeerByName(name)
	switch {
	case !ok:
		return fmt.Errorf("node: exit node %q is not a member of the peer book %s", name, book.Source)
	case p.PublicKey == n.self:
		return fmt.Errorf("node: exit node %q is this member itself; name another member", name)
	case !p.Exit:
		return fmt.Errorf("node: member %q is not an exit member; set exit = true on it in the peer book %s (line %d)", p.Name, book.Source, p.Line)
	}
	return nil
}

// isExitNode reports whether p is the exit node this node sends non-mesh
// traffic to.
func (n *Node) isExitNode(book *peerbook.Book, p *peerbook.Peer) bool {
	if n.cfg.ExitNode == "" || !p.Exit {
		return false
	}
	q, ok := book.PeerByName(n.cfg.ExitNode)
	return ok && q.PublicKey == p.PublicKey
}

// warnExitLocked logs when the exit node chosen is no longer one in book.
// Runs on the loop.
func (n *Node) warnExitLocked(book *peerbook.Book) {
	if n.cfg.ExitNode == "" {
		return
	}
	if p, ok := book.PeerByName(n.cfg.ExitNode); !ok || !p.Exit || p.PublicKey == n.self {
		n.log.Warn("the exit node is no longer an exit member of the book; traffic outside the mesh is dropped until it is again", "exit_node", n.cfg.ExitNode)
	}
}

// exitMark returns the firewall mark for the TUN interface ifname when
// this node uses an exit node, else 0.
func (n *Node) exitMark(ifname string) uint32 {
	if n.cfg.ExitNode == "" {
		return 0
	}
	return hostnet.ExitMarkFor(ifname)
}

// fwmark sets the device's firewall mark (0 clears it).
func (w *uapiWriter) fwmark(mark uint32) {
	w.line("fwmark", strconv.FormatUint(uint64(mark), 10))
}

// exitNetworks are the mesh networks an exit member masquerades.
func exitNetworks(book *peerbook.Book) []netip.Prefix {
	return book.Mesh.Networks
}
