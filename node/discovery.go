package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/dnsserve"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/registry"
)

// NAT traversal. Registry members (registry = true) publish, over DNS-SD
// on their mesh address, the endpoint they observe for every member: for a
// member behind NAT, its NAT's public mapping. A member with no endpoint in
// the book is looked up there; both sides then send to each other's
// mapping at about the same time, keepalives on, and a cone NAT lets the
// handshake through. Where it does not, the path logic falls back to a
// relay.

const (
	// DefaultRegistryPort is the port registries answer on.
	DefaultRegistryPort = 53
	// discoverUnreachable is how often a member without a working path is
	// looked up; discoverReachable how often once it is reached directly.
	discoverUnreachable = 2 * time.Second
	discoverReachable   = 60 * time.Second
	discoverTimeout     = 2 * time.Second
)

// registryTarget is one registry to ask.
type registryTarget struct {
	ex   registry.Exchanger
	zone string
	name string
	// lookup, when set, is asked instead of ex (an EndpointDirectory).
	lookup func(context.Context, peerbook.Key) (netip.AddrPort, error)
	// member: a registry member of the book, reached through the mesh,
	// which takes LAN announcements.
	member bool
}

type discoverJob struct {
	key    peerbook.Key
	name   string
	direct bool
}

// discoverJobsLocked picks the members due for a registry lookup, from
// dev, the tick's device snapshot, and schedules their next lookup.
// Runs on the loop.
func (n *Node) discoverJobsLocked(dev *deviceState, now time.Time) []discoverJob {
	var jobs []discoverJob
	for k, pc := range n.applied {
		entry := n.entries[k]
		if entry == nil || !entry.Endpoint.IsZero() {
			continue // the book says where it is
		}
		if _, ok := n.cfg.EndpointOverrides[pc.name]; ok {
			continue
		}
		if next, ok := n.discoverNext[k]; ok && now.Before(next) {
			continue
		}
		d := n.reachedLocked(dev, k, now)
		interval := discoverUnreachable
		if d {
			interval = n.discoverReachableEvery()
		}
		n.discoverNext[k] = now.Add(interval)
		jobs = append(jobs, discoverJob{key: k, name: pc.name, direct: d})
	}
	return jobs
}

// discover asks targets for jobs' members, in order, outside the loop,
// and posts the first answer for each to it.
func (n *Node) discover(ctx context.Context, targets []registryTarget, jobs []discoverJob) {
	var local []netip.Prefix // this host's networks, for LAN candidates
	if v := n.view.Load(); v != nil && v.book != nil && !v.book.Mesh.NoLANCandidates {
		local = localAddrs(v.ifname, v.book.Mesh.Networks)
	}
	for _, j := range jobs {
		for _, t := range targets {
			qctx, cancel := context.WithTimeout(ctx, discoverTimeout)
			var ap netip.AddrPort
			var lan []netip.AddrPort
			var err error
			if t.lookup != nil {
				ap, err = t.lookup(qctx, j.key)
			} else {
				var mb registry.Member
				mb, err = registry.LookupMember(qctx, t.ex, t.zone, j.key)
				ap, lan = mb.Endpoint, onLink(mb.LAN, local)
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				if !errors.Is(err, registry.ErrNotFound) {
					n.log.Debug("registry lookup failed", "registry", t.name, "peer", j.name, "err", err)
				}
				continue
			}
			n.post(discoveredEvent{job: j, ap: ap, lan: lan, from: t.name})
			break
		}
	}
}

// registryTargets lists the registries to ask: registry members of the
// book, reached through the mesh, then Config.Registry. Runs on the loop.
func (n *Node) registryTargets() []registryTarget {
	var out []registryTarget
	zone := dns.Fqdn(n.book.Mesh.Domain)
	port := n.registryPort()
	for i := range n.book.Peers {
		p := &n.book.Peers[i]
		if !p.Registry || p.PublicKey == n.self || len(p.Addresses) == 0 {
			continue
		}
		addr := netip.AddrPortFrom(p.Addresses[0], port).String()
		out = append(out, registryTarget{ex: registry.DialExchanger{Dial: n.Dial, Addr: addr}, zone: zone, name: p.Name, member: true})
	}
	if n.cfg.Registry != "" {
		rz := n.cfg.RegistryZone
		if rz == "" {
			rz = zone
		}
		out = append(out, registryTarget{ex: registry.DialExchanger{Addr: n.cfg.Registry}, zone: dns.Fqdn(rz), name: n.cfg.Registry})
	}
	if t, ok := n.directoryTarget(); ok {
		out = append(out, t)
	}
	return out
}

// discoverReachableEvery is how often a member reached directly is looked
// up again: discoverReachable, or n.discoverReachable in tests.
func (n *Node) discoverReachableEvery() time.Duration {
	if n.discoverReachable > 0 {
		return n.discoverReachable
	}
	return discoverReachable
}

func (n *Node) registryPort() uint16 {
	if n.cfg.RegistryPort != 0 {
		return n.cfg.RegistryPort
	}
	return DefaultRegistryPort
}

// applyDiscovered points the device at a member's registry-observed
// endpoint, or at one of its LAN candidates lan (see lan.go). A member
// reached directly keeps the endpoint that works. Runs on the loop.
func (n *Node) applyDiscovered(j discoverJob, ap netip.AddrPort, lan []netip.AddrPort, from string) {
	pc, ok := n.applied[j.key]
	entry := n.entries[j.key]
	if !ok || entry == nil || !entry.Endpoint.IsZero() || n.dev == nil {
		return
	}
	n.discovered[j.key] = ap
	if j.direct {
		n.lanReachedLocked(j.key)
		return
	}
	target, isLAN := n.lanTargetLocked(j.key, lan, ap, n.now())
	if pc.endpoint == target {
		return
	}
	if err := n.setEndpointLocked(pc, entry, target); err != nil {
		n.log.Error("cannot set discovered endpoint", "peer", j.name, "err", err)
		return
	}
	n.publishStatusLocked(nil)
	if isLAN {
		n.log.Info("trying the member's LAN candidate from registry", "peer", j.name, "registry", from, "endpoint", target.String())
		n.initiateLocked(j.key)
		return
	}
	n.log.Info("member endpoint from registry", "peer", j.name, "registry", from, "endpoint", ap.String())
}

// observedMembers is what this node publishes as a registry: every other
// member's endpoint as the device sees it.
func (n *Node) observedMembers() []registry.Member {
	snap := n.snap.Load()
	if snap == nil || snap.dev == nil {
		return nil
	}
	dev := snap.dev
	var out []registry.Member
	for i := range snap.book.Peers {
		p := &snap.book.Peers[i]
		d, ok := dev.peers[p.PublicKey]
		if p.PublicKey == n.self || !ok || !d.endpoint.IsValid() {
			continue
		}
		out = append(out, registry.Member{PublicKey: p.PublicKey, Endpoint: d.endpoint, AllowedIPs: p.AllowedIPs()})
	}
	return out
}

// meshOwner returns the member whose mesh address is a, from the latest
// published book: who sent a registry announcement through the mesh.
func (n *Node) meshOwner(a netip.Addr) (peerbook.Key, bool) {
	snap := n.snap.Load()
	if snap == nil || snap.book == nil || snap.book.Mesh.NoLANCandidates {
		return peerbook.Key{}, false
	}
	for i := range snap.book.Peers {
		p := &snap.book.Peers[i]
		if p.PublicKey != n.self && slices.Contains(p.Addresses, a) {
			return p.PublicKey, true
		}
	}
	return peerbook.Key{}, false
}

// serveMeshDNS answers DNS on this node's mesh addresses: the registry
// zone when this member is a registry, Config.MeshDNS for everything else.
// Runs on the loop.
func (n *Node) serveMeshDNS(self *peerbook.Peer) error {
	if !self.Registry && n.cfg.MeshDNS == nil {
		return nil
	}
	mux := dns.NewServeMux()
	if n.cfg.MeshDNS != nil {
		mux.Handle(".", n.cfg.MeshDNS)
	}
	if self.Registry {
		zone := dns.Fqdn(n.book.Mesh.Domain)
		srv := &registry.Server{Zone: zone, Owner: n.meshOwner, Logger: n.log.With("part", "registry")}
		srv.Members = func() []registry.Member {
			if snap := n.snap.Load(); snap != nil && snap.book != nil && snap.book.Mesh.NoLANCandidates {
				srv.ForgetLAN() // announced before a reload turned them off
			}
			return n.observedMembers()
		}
		n.registry = srv
		mux.Handle(registry.ServiceName(zone), n.registry)
	}
	port := n.registryPort()
	for _, a := range self.Addresses {
		ap := netip.AddrPortFrom(a, port)
		var pc net.PacketConn
		var ln net.Listener
		var err error
		if n.stack != nil {
			pc, err = n.stack.ListenUDP(ap)
			if err == nil {
				ln, err = n.stack.ListenTCP(ap)
			}
		} else {
			pc, err = net.ListenPacket("udp", ap.String())
			if err == nil {
				ln, err = net.Listen("tcp", ap.String())
			}
		}
		if err != nil {
			if pc != nil {
				pc.Close()
			}
			return fmt.Errorf("node: serve DNS on mesh address %s: %w", ap, err)
		}
		udp := &dns.Server{PacketConn: pc, Handler: mux, MsgAcceptFunc: dnsserve.AcceptFunc}
		tcp := &dns.Server{Listener: ln, Handler: mux, MsgAcceptFunc: dnsserve.AcceptFunc}
		n.dnsServers = append(n.dnsServers, udp, tcp)
		go udp.ActivateAndServe()
		go tcp.ActivateAndServe()
	}
	n.log.Info("answering DNS on the mesh", "port", strconv.Itoa(int(port)), "registry", self.Registry, "names", n.cfg.MeshDNS != nil)
	return nil
}
