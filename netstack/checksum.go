package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Checksums for the packets the link endpoint builds or rewrites: the
// segments it splits from a GSO super-segment and the packets it coalesces.
// They use gVisor's optimized RFC 1071 sum; the tests check them against an
// independent, plain implementation.

const (
	protoTCP = 6

	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	tcpHeaderLen  = 20

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagURG = 0x20
	tcpFlagECE = 0x40
	tcpFlagCWR = 0x80
)

// setIPv4Checksum recomputes the header checksum of the IPv4 header ip.
func setIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
}

// setTCPChecksum computes the checksum of the TCP segment tcp (header and
// payload) carried in a packet whose IP header is ip, and stores it.
func setTCPChecksum(ip []byte, tcp []byte) {
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], ^checksum.Checksum(tcp, tcpPseudoSum(ip, len(tcp))))
}

// tcpPseudoSum is the sum of the pseudo-header of a TCP segment of length
// n: the addresses (contiguous in both IP versions), the protocol and the
// length.
func tcpPseudoSum(ip []byte, n int) uint16 {
	var addrs []byte
	if ip[0]>>4 == 4 {
		addrs = ip[12:20]
	} else {
		addrs = ip[8:40]
	}
	s := checksum.Checksum(addrs, 0)
	s = checksum.Combine(s, protoTCP)
	return checksum.Combine(s, uint16(n))
}
