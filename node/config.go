package node

import (
	"context"
	"log/slog"
	"net/netip"

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

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
}

// EphemeralPort as Config.ListenPort asks for a port chosen by the system.
const EphemeralPort = -1

// Resolver looks up endpoint hostnames; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}
