package node

import (
	"net/netip"
	"time"

	"github.com/wgmesh/wgmesh/netstack"
)

// Status is a snapshot of a running node. It holds public facts only.
type Status struct {
	// Name, PublicKey (base64) and Addresses of this node.
	Name      string       `json:"name"`
	PublicKey string       `json:"public_key"`
	Addresses []netip.Addr `json:"addresses"`
	// ListenPort is the UDP port actually bound.
	ListenPort uint16 `json:"listen_port"`
	// Mode is "netstack" or "tun".
	Mode string `json:"mode"`
	// Interface is the TUN interface's name in TUN mode.
	Interface string `json:"interface,omitempty"`
	// BookSerial is the serial of the applied book.
	BookSerial uint64 `json:"book_serial"`
	// Rules is the number of access rules ([[rule]]) in force; 0 when
	// the book has none and every member may open every flow.
	Rules int `json:"rules"`
	// Dropped counts, by reason, packets from the mesh that the access
	// rules dropped and that came from no member of the book
	// ("not-a-member", "malformed"). Omitted while zero.
	Dropped map[string]uint64 `json:"dropped,omitempty"`
	// TCP counts the userspace stack's loss repairs, in netstack mode
	// only (the kernel keeps its own in TUN mode: nstat).
	TCP *netstack.TCPStats `json:"tcp,omitempty"`
	// Peers lists every other member in book order.
	Peers []PeerStatus `json:"peers"`
}

// PeerStatus describes one other member as the device sees it.
type PeerStatus struct {
	Name      string         `json:"name"`
	PublicKey string         `json:"public_key"`
	Addresses []netip.Addr   `json:"addresses"`
	Subnets   []netip.Prefix `json:"subnets,omitempty"`
	// Endpoint is the address the device currently sends to; empty if none.
	Endpoint string `json:"endpoint,omitempty"`
	// LastHandshake is zero when no handshake has completed yet.
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	// NotInBook marks a peer the device has that the book does not list
	// (added with wg set); its Name is empty.
	NotInBook bool   `json:"not_in_book,omitempty"`
	RxBytes   uint64 `json:"rx_bytes"`
	// Path is "direct" (a recent handshake), "relayed via NAME", "idle"
	// (no traffic for a while: out of the device until a packet to or
	// from the member, see PathIdle), or "no path".
	Path string `json:"path"`
	// PathSince is when Path last changed.
	PathSince time.Time `json:"path_since,omitzero"`
	// EndpointSource says where the endpoint came from: "book", "dns",
	// "registry", "roaming" (the member's packets came from elsewhere and
	// WireGuard followed), or "" when there is none.
	EndpointSource string `json:"endpoint_source,omitempty"`
	// EndpointChanges counts endpoint changes made by this node (DNS
	// re-resolution) since it started.
	EndpointChanges uint64 `json:"endpoint_changes"`
	TxBytes         uint64 `json:"tx_bytes"`
	// Dropped is the number of packets from this member that the access
	// rules dropped since the node started; DroppedBy splits it by reason
	// ("no-rule", "fragment"), omitted while zero.
	Dropped   uint64            `json:"dropped"`
	DroppedBy map[string]uint64 `json:"dropped_by,omitempty"`
}
