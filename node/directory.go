package node

import (
	"context"
	"net/netip"

	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/registry"
)

// EndpointDirectory is a store of observed endpoints outside the mesh (the
// endpoints/ of a book in etcd), asked after the registries for members
// that have no endpoint in the book. What it answers only says where to
// send a member's packets; WireGuard still authenticates the member.
type EndpointDirectory interface {
	// LookupEndpoint returns an endpoint observed for the member with
	// public key k, or an error when there is none.
	LookupEndpoint(ctx context.Context, k peerbook.Key) (netip.AddrPort, error)
	// String names the directory in logs.
	String() string
}

// ObservedEndpoints returns every other member's endpoint as this node's
// device sees it (what a registry member publishes), from the latest
// status snapshot.
func (n *Node) ObservedEndpoints() []registry.Member { return n.observedMembers() }

// directoryTarget is Config.EndpointDirectory as a discovery target.
func (n *Node) directoryTarget() (registryTarget, bool) {
	d := n.cfg.EndpointDirectory
	if d == nil {
		return registryTarget{}, false
	}
	return registryTarget{lookup: d.LookupEndpoint, name: d.String()}, true
}
