package node

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/registry"
)

// LAN candidates. Two members behind one NAT router that does not hairpin
// cannot reach each other at their public mappings. So every member
// announces its own underlay addresses (those of its up interfaces other
// than the mesh interface, with the port it listens on; never loopback,
// link-local or mesh addresses) to the registry members of the book,
// through the mesh (registry.Announce), every lanRefresh, or every
// lanRetry until an announcement succeeds. A registry publishes them
// beside the observed mapping. A member that looks another up keeps the
// candidates that lie on one of its own networks (the other member may
// be on its LAN; a candidate on another network is somebody else's
// private address) and, while the member is not reached directly, tries
// them first, one per WireGuard retry period (lanWait), before the public
// mapping; it then alternates, so a pair behind one router meets over the
// LAN within one retry and a pair behind different NATs punches as
// before. The mesh table's lan_candidates = false turns both halves off.

const (
	lanRetry   = 3 * time.Second
	lanRefresh = 60 * time.Second
	// lanWait is how long one candidate is tried: a little more than
	// WireGuard's 5 s between initiations.
	lanWait = 6 * time.Second
	// maxLANCandidates bounds what a member announces.
	maxLANCandidates = 8
)

// lanState is the node's LAN candidate state, owned by the loop except
// busy.
type lanState struct {
	next time.Time // next announcement
	busy atomic.Bool
	// peers: where each member with LAN candidates stands.
	peers map[peerbook.Key]*lanPeer
}

// lanPeer is the rotation over one member's LAN candidates and public
// mapping: idx indexes cands, len(cands) is the public mapping.
type lanPeer struct {
	cands []netip.AddrPort
	idx   int
	since time.Time
}

// lanAnnouncedEvent reports an announcement round begun at at.
type lanAnnouncedEvent struct {
	at time.Time
	ok bool
}

func (e lanAnnouncedEvent) handle(n *Node) {
	if e.ok {
		n.lan.next = e.at.Add(lanRefresh)
	}
}

// lanAnnounceLocked starts an announcement round to the book's registry
// members in targets when one is due. Runs on the loop.
func (n *Node) lanAnnounceLocked(ctx context.Context, targets []registryTarget, now time.Time) {
	if n.book == nil || n.book.Mesh.NoLANCandidates || now.Before(n.lan.next) || n.lan.busy.Load() {
		return
	}
	var mesh []registryTarget
	for _, t := range targets {
		if t.member {
			mesh = append(mesh, t)
		}
	}
	if len(mesh) == 0 || n.listenPort == 0 {
		return
	}
	n.lan.next = now.Add(lanRetry)
	n.lan.busy.Store(true)
	port, ifname, networks, self := n.listenPort, n.ifname, slices.Clone(n.book.Mesh.Networks), n.self
	go func() {
		defer n.lan.busy.Store(false)
		cands := localCandidates(port, ifname, networks)
		ok := true
		for _, t := range mesh {
			actx, cancel := context.WithTimeout(ctx, discoverTimeout)
			err := registry.Announce(actx, t.ex, t.zone, self, cands)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				ok = false
				n.log.Debug("LAN candidates not announced", "registry", t.name, "err", err)
			}
		}
		n.post(lanAnnouncedEvent{at: now, ok: ok})
	}()
}

// localAddrs returns the usable addresses of the host's up interfaces
// other than skipIf, with their networks, leaving out mesh addresses.
func localAddrs(skipIf string, mesh []netip.Prefix) []netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || (skipIf != "" && ifc.Name == skipIf) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			if !registry.Usable(netip.AddrPortFrom(ip, 1)) || inAny(mesh, ip) {
				continue
			}
			out = append(out, netip.PrefixFrom(ip, ones))
		}
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// localCandidates is what this host announces: its usable local
// addresses with port, IPv4 first, at most maxLANCandidates.
func localCandidates(port uint16, skipIf string, mesh []netip.Prefix) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range localAddrs(skipIf, mesh) {
		out = append(out, netip.AddrPortFrom(p.Addr(), port))
	}
	slices.SortStableFunc(out, func(a, b netip.AddrPort) int {
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		return 0
	})
	out = slices.Compact(out)
	if len(out) > maxLANCandidates {
		out = out[:maxLANCandidates]
	}
	return out
}

// onLink keeps the candidates that lie on one of local's networks and
// are not local addresses themselves.
func onLink(cands []netip.AddrPort, local []netip.Prefix) []netip.AddrPort {
	var out []netip.AddrPort
	for _, c := range cands {
		mine := false
		for _, p := range local {
			if p.Addr() == c.Addr() {
				mine = true
			}
		}
		if !mine && inAny(local, c.Addr()) {
			out = append(out, c)
		}
	}
	return out
}

// lanTargetLocked returns where to send to member k, not reached
// directly, whose registry answer is public with LAN candidates cands
// (already on-link): the candidate in turn. Runs on the loop.
func (n *Node) lanTargetLocked(k peerbook.Key, cands []netip.AddrPort, public netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	if n.book.Mesh.NoLANCandidates || len(cands) == 0 {
		delete(n.lan.peers, k)
		return public, false
	}
	if n.lan.peers == nil {
		n.lan.peers = map[peerbook.Key]*lanPeer{}
	}
	lp := n.lan.peers[k]
	if lp == nil || !slices.Equal(lp.cands, cands) {
		lp = &lanPeer{cands: cands, since: now}
		n.lan.peers[k] = lp
	} else if now.Sub(lp.since) >= lanWait {
		lp.idx = (lp.idx + 1) % (len(cands) + 1)
		lp.since = now
	}
	if lp.idx == len(cands) {
		return public, false
	}
	return cands[lp.idx], true
}

// lanReachedLocked forgets the rotation of member k, reached directly.
// Runs on the loop.
func (n *Node) lanReachedLocked(k peerbook.Key) {
	delete(n.lan.peers, k)
}
