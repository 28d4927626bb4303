package registry

import (
	"encoding/base32"
	"errors"
	"strings"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/peerbook"
)

// Service is the DNS-SD service type of WireGuard endpoints, as the wgsd
// CoreDNS plugin names it. Members are instances of it:
// LABEL._wireguard._udp.ZONE.
const Service = "_wireguard._udp."

// labelLen is the length of a public key in padded standard base32.
const labelLen = 56

// Label returns the DNS label of a member: its public key in RFC 4648
// standard base32 with padding (56 characters ending in "===="), lower
// case. Servers match it case-insensitively.
func Label(k peerbook.Key) string {
	return strings.ToLower(base32.StdEncoding.EncodeToString(k[:]))
}

// ParseLabel returns the key a label stands for, in either case. It
// accepts only the canonical encoding of a 32-byte key, so each key has
// exactly one label (up to case).
func ParseLabel(label string) (peerbook.Key, error) {
	if len(label) != labelLen {
		return peerbook.Key{}, errors.New("label is not 56 characters of base32")
	}
	up := strings.ToUpper(label)
	b, err := base32.StdEncoding.DecodeString(up)
	if err != nil || len(b) != peerbook.KeyLen || base32.StdEncoding.EncodeToString(b) != up {
		return peerbook.Key{}, errors.New("label is not the base32 form of a 32-byte key")
	}
	var k peerbook.Key
	copy(k[:], b)
	return k, nil
}

// InstanceName returns the fully qualified, lower-case name of k's
// service instance in zone: LABEL._wireguard._udp.ZONE.
func InstanceName(zone string, k peerbook.Key) string {
	return Label(k) + "." + Service + normalizeZone(zone)
}

// ServiceName returns the fully qualified name that lists the members of
// zone: _wireguard._udp.ZONE.
func ServiceName(zone string) string {
	return Service + normalizeZone(zone)
}

// normalizeZone returns zone fully qualified and in lower case; an empty
// zone is the default mesh domain, "mesh.".
func normalizeZone(zone string) string {
	z := strings.ToLower(strings.Trim(zone, "."))
	if z == "" {
		z = peerbook.DefaultDomain
	}
	return dns.Fqdn(z)
}

// instanceKey returns the key of the instance name in zone (normalised),
// or false if name is not an instance of the service there.
func instanceKey(name, zone string) (peerbook.Key, bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(dns.Fqdn(name)), "."+Service+zone)
	if !ok {
		return peerbook.Key{}, false
	}
	k, err := ParseLabel(rest)
	return k, err == nil
}
