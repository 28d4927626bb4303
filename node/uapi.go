package node

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"

	"github.com/wgmesh/wgmesh/peerbook"
)

// uapiWriter builds a wireguard-go UAPI "set" transaction. Every method takes
// typed, already validated values and renders them itself, so no string from
// a peer book (a name, a hostname) can ever reach the UAPI text: a newline or
// '=' in a book field has no way in. The result contains the private key
// when privateKey was called; never log it.
type uapiWriter struct {
	b strings.Builder
}

func (w *uapiWriter) line(key, value string) {
	w.b.WriteString(key)
	w.b.WriteByte('=')
	w.b.WriteString(value)
	w.b.WriteByte('\n')
}

func (w *uapiWriter) privateKey(k peerbook.PrivateKey) {
	w.line("private_key", hex.EncodeToString(k[:]))
}

func (w *uapiWriter) listenPort(port uint16) {
	w.line("listen_port", strconv.FormatUint(uint64(port), 10))
}

func (w *uapiWriter) replacePeers() { w.line("replace_peers", "true") }

// peer starts a peer section; the following calls apply to it.
func (w *uapiWriter) peer(k peerbook.Key) { w.line("public_key", hex.EncodeToString(k[:])) }

func (w *uapiWriter) updateOnly() { w.line("update_only", "true") }

func (w *uapiWriter) remove() { w.line("remove", "true") }

func (w *uapiWriter) endpoint(ap netip.AddrPort) { w.line("endpoint", ap.String()) }

func (w *uapiWriter) keepalive(seconds uint16) {
	w.line("persistent_keepalive_interval", strconv.FormatUint(uint64(seconds), 10))
}

// allowedIPs replaces the peer's allowed IPs with prefixes.
func (w *uapiWriter) allowedIPs(prefixes []netip.Prefix) {
	w.line("replace_allowed_ips", "true")
	for _, p := range prefixes {
		w.line("allowed_ip", p.Masked().String())
	}
}

// String returns the transaction text. It may contain the private key.
func (w *uapiWriter) String() string { return w.b.String() }

// peerConfig is everything the device is told about one member. It is the
// unit of comparison between two applied books.
type peerConfig struct {
	name      string
	key       peerbook.Key
	endpoint  netip.AddrPort // invalid when unknown
	keepalive uint16
	// allowedIPs is what the device routes to this member: its book
	// prefixes, plus those of members relayed through it, or nothing
	// while it is itself reached through a relay.
	allowedIPs []netip.Prefix
	// own are the member's book prefixes (addresses and subnets).
	own []netip.Prefix
}

func (p *peerConfig) equal(q *peerConfig) bool {
	if p.key != q.key || p.endpoint != q.endpoint || p.keepalive != q.keepalive || len(p.allowedIPs) != len(q.allowedIPs) {
		return false
	}
	for i := range p.allowedIPs {
		if p.allowedIPs[i] != q.allowedIPs[i] {
			return false
		}
	}
	return true
}

// write renders p as a peer section. With update, the peer must already
// exist and only fields are changed: wireguard-go keeps its session, so no
// new handshake happens.
func (w *uapiWriter) writePeer(p *peerConfig, update bool) {
	w.peer(p.key)
	if update {
		w.updateOnly()
	}
	if p.endpoint.IsValid() {
		w.endpoint(p.endpoint)
	}
	w.keepalive(p.keepalive)
	w.allowedIPs(p.allowedIPs)
}
