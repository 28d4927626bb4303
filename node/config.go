package node

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/miekg/dns"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Config describes a Node. The zero value of every optional field is a
// working default, stated beside it.
type Config struct {
	// Book is the peer book to apply. Required.
	Book *peerbook.Book

	// PrivateKey is this node's WireGuard private key. Required. The node
	// finds itself in Book by the matching public key.
	PrivateKey peerbook.PrivateKey

	// ListenPort overrides the UDP port the node binds. Default (0): the
	// port the book gives this member (its listen_port, else its endpoint's
	// port, else mesh.listen_port). EphemeralPort (-1) lets the system pick a
	// free port, which Status reports; tests and the demo use it.
	ListenPort int

	// EndpointOverrides replaces book endpoints by member name. Default:
	// none.
	EndpointOverrides map[string]netip.AddrPort

	// Resolver resolves endpoint hostnames. Default: net.DefaultResolver.
	Resolver Resolver

	// ResolveInterval is how often endpoint hostnames are re-resolved.
	// Default: DefaultResolveInterval (60 s). Members without a recent
	// handshake are retried sooner, with back-off.
	ResolveInterval time.Duration

	// Mode selects the data plane: ModeNetstack (default), a userspace
	// TCP/IP stack reached through Dial and Listen, needing no privileges;
	// or ModeTUN, a kernel TUN interface that every program on the host
	// can use, needing root or CAP_NET_ADMIN.
	Mode Mode

	// InterfaceName is the TUN interface to create in ModeTUN. Default:
	// "wgmesh0" on Linux, "utun" (the next free utunN) on macOS.
	InterfaceName string

	// Masquerade, in ModeTUN on a member that routes subnets, source-NATs
	// mesh traffic into those LANs, for LAN routers with no route back to
	// the mesh. Default: off.
	Masquerade bool

	// ExitNode names a member with exit = true that all traffic outside
	// the mesh goes through (ModeTUN: default routes through the
	// interface that keep the underlay endpoints reachable, removed on
	// Close; ModeNetstack: Dial sends such destinations there while it
	// is an exit member, and refuses them otherwise). Default: none:
	// netstack mode's Dial refuses destinations outside the mesh.
	ExitNode string

	// StateDir, in ModeTUN, keeps the original values of the sysctls the
	// node changes (IP forwarding on a member with subnets) until it
	// restores them, so a node that was killed leaves them for the next
	// one to restore. Default: kept in memory only.
	StateDir string

	// Registry is a DNS-SD registry outside the mesh, ADDR:PORT, asked for
	// the endpoints of members that have none in the book, after the
	// book's registry members: e.g. CoreDNS with the wgsd plugin. Default:
	// none.
	Registry string

	// RegistryZone is Registry's zone. Default: the mesh domain.
	RegistryZone string

	// EndpointDirectory, if set, is asked after the registries for the
	// endpoints of members that have none in the book (observed endpoints
	// kept in etcd, say). Default: none.
	EndpointDirectory EndpointDirectory

	// RegistryPort is the port on mesh addresses where registry members
	// answer, both when this node is one and when it asks one. Default:
	// DefaultRegistryPort (53).
	RegistryPort uint16

	// MeshDNS, if set, answers DNS queries that reach this node's mesh
	// addresses on RegistryPort (member names, say), next to the registry
	// zone when this member is a registry. Default: none.
	MeshDNS dns.Handler

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
}

// EphemeralPort as Config.ListenPort asks for a port chosen by the system.
const EphemeralPort = -1

// Resolver looks up endpoint hostnames; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Mode is a node's data plane.
type Mode string

// Data planes.
const (
	ModeNetstack Mode = "netstack"
	ModeTUN      Mode = "tun"
)
