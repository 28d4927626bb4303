package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/wgmesh/wgmesh/hostnet"
	"github.com/wgmesh/wgmesh/netstack"
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
//
// In netstack mode the stack's default route already leads to
// wireguard-go, so the default prefixes are all a member using an exit
// needs; Dial refuses destinations outside the mesh unless the exit node
// is an exit member of the book in force (exitRefusal). A netstack exit
// member opens its members' flows from host sockets (netstack/exit.go),
// refusing destinations on its own host and inside the mesh. Access rules
// control who may use an exit: to = ["exit:NAME"], enforced by NAME.

// defaultPrefixes route everything.
var defaultPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// checkExitNode checks Config.ExitNode against book at Up.
func (n *Node) checkExitNode(book *peerbook.Book) error {
	name := n.cfg.ExitNode
	if name == "" {
		return nil
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

// ExitActive reports whether this node sends traffic outside the mesh
// through an exit node now: Config.ExitNode is a member of the book in
// force with exit = true. The proxies let such destinations through only
// while it does.
func (n *Node) ExitActive() bool {
	return n.exitUsable(n.Book())
}

func (n *Node) exitUsable(book *peerbook.Book) bool {
	if n.cfg.ExitNode == "" {
		return false
	}
	p, ok := book.PeerByName(n.cfg.ExitNode)
	return ok && p.Exit && p.PublicKey != n.self
}

// exitRefusal explains, in netstack mode, why Dial does not send to a,
// or returns nil. Mesh destinations (members' addresses and subnets, the
// mesh networks) always go into the mesh; others only through a usable
// exit node, else the stack would send them to wireguard-go, which has no
// member for them, and the dial would hang until its timeout.
func (n *Node) exitRefusal(book *peerbook.Book, a netip.Addr) error {
	if inMesh(book, a) {
		return nil
	}
	switch {
	case n.cfg.ExitNode == "":
		return fmt.Errorf("%s is outside the mesh (no member's address or subnet); to reach it through an exit member, start with --exit-node NAME (Config.ExitNode)", a)
	case !n.exitUsable(book):
		return fmt.Errorf("%s is outside the mesh and exit node %q is no longer an exit member of the peer book %s; traffic outside the mesh is refused until it is again", a, n.cfg.ExitNode, book.Source)
	}
	return nil
}

// inMesh reports whether a is inside the mesh networks, or a member's
// address or inside a member's subnet.
func inMesh(book *peerbook.Book, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range meshPrefixes(book) {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// meshPrefixes are what is not outside the mesh: its networks and every
// member's allowed IPs (addresses and subnets).
func meshPrefixes(book *peerbook.Book) []netip.Prefix {
	out := slices.Clone(book.Mesh.Networks)
	for i := range book.Peers {
		out = append(out, book.Peers[i].AllowedIPs()...)
	}
	return out
}

// setExitLocked makes the netstack router forward outside the mesh while
// self has exit = true, and stops it (fail closed) when it loses it.
// Runs on the loop or in Up.
func (n *Node) setExitLocked(book *peerbook.Book, self *peerbook.Peer) {
	if n.subnets == nil {
		return
	}
	was := n.exitForwarding
	n.exitForwarding = self.Exit
	if !self.Exit {
		n.subnets.SetExit(nil)
		if was {
			n.log.Warn("this member no longer has exit = true: flows to destinations outside the mesh are refused")
		}
		return
	}
	n.subnets.SetExit(&netstack.Exit{Mesh: meshPrefixes(book)})
	if !was {
		n.log.Info("exit member: forwarding flows from members to destinations outside the mesh through host sockets")
	}
}

// exitEndpointsLocked are the underlay addresses the device sends to,
// which the exit routes must not capture (hostnet.Setup.ExitEndpoints).
// Runs on the loop or in Up.
func (n *Node) exitEndpointsLocked() []netip.Addr {
	var out []netip.Addr
	for _, pc := range n.applied {
		if a := pc.endpoint.Addr(); pc.endpoint.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// syncExitEndpointsLocked keeps the macOS host routes of the endpoints in
// step with the applied book (nothing on Linux). Endpoints WireGuard
// learns from roaming members are not followed. Runs on the loop.
func (n *Node) syncExitEndpointsLocked() {
	if n.host == nil || n.cfg.ExitNode == "" {
		return
	}
	if err := n.host.SetExitEndpoints(n.exitEndpointsLocked()); err != nil {
		n.log.Warn("exit node: routing the members' endpoints outside the tunnel", "err", err)
	}
}

// exitNetworks are the mesh networks an exit member masquerades.
func exitNetworks(book *peerbook.Book) []netip.Prefix {
	return book.Mesh.Networks
}
