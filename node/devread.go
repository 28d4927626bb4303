package node

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgmesh/wgmesh/peerbook"
)

// deviceState is the part of the device's UAPI "get" output that the
// node's consumers need (paths, discovery, DDNS, greetings, status). It is
// read once per tick and not changed once read: Status serves it to
// readers without a lock. The private key line is skipped while parsing
// and never stored.
type deviceState struct {
	// read is when the device was read.
	read       time.Time
	listenPort uint16
	peers      map[peerbook.Key]*devicePeer
}

type devicePeer struct {
	endpoint      netip.AddrPort
	lastHandshake time.Time
	rx, tx        uint64
}

// readDevice reads n.dev. Caller runs on the loop, in Up, or otherwise ends
// before the device closes.
func (n *Node) readDevice() (*deviceState, error) {
	return readDeviceState(n.dev, 0)
}

// readDeviceState reads and parses dev's state. sizeHint, the number of
// peers of the previous read, sizes the map and the peer slab.
func readDeviceState(dev *device.Device, sizeHint int) (*deviceState, error) {
	p := deviceParser{st: &deviceState{read: time.Now(), peers: make(map[peerbook.Key]*devicePeer, sizeHint)}}
	p.slab = make([]devicePeer, 0, sizeHint+16)
	if err := dev.IpcGetOperation(&p); err != nil {
		return nil, fmt.Errorf("node: read device state: %w", err)
	}
	p.flush()
	return p.st, nil
}

// deviceParser parses the UAPI get output as the device writes it, from
// its buffer, without a copy as a string: only the lines the node needs
// are looked at, numbers and IPv4 endpoints are parsed in place, and the
// peers are allocated in one slab.
type deviceParser struct {
	st       *deviceState
	slab     []devicePeer
	cur      *devicePeer
	sec, nse int64
	rest     []byte // an incomplete last line of a previous Write
}

func (p *deviceParser) Write(b []byte) (int, error) {
	n := len(b)
	if len(p.rest) > 0 {
		b = append(p.rest, b...)
		p.rest = nil
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.rest = append([]byte(nil), b...)
			break
		}
		p.line(b[:i])
		b = b[i+1:]
	}
	return n, nil
}

func (p *deviceParser) flush() {
	if p.cur != nil && (p.sec != 0 || p.nse != 0) {
		p.cur.lastHandshake = time.Unix(p.sec, p.nse)
	}
	p.sec, p.nse = 0, 0
}

func (p *deviceParser) line(l []byte) {
	eq := bytes.IndexByte(l, '=')
	if eq < 0 {
		return
	}
	key, value := l[:eq], l[eq+1:]
	// The first byte tells the frequent lines apart cheaply; allowed_ip,
	// preshared_key, protocol_version and the keepalive are not needed.
	switch key[0] {
	case 'p':
		if string(key) != "public_key" {
			return
		}
		p.flush()
		var k peerbook.Key
		if len(value) == 2*len(k) {
			for i := range k {
				hi, ok1 := unhex(value[2*i])
				lo, ok2 := unhex(value[2*i+1])
				if !ok1 || !ok2 {
					k = peerbook.Key{}
					break
				}
				k[i] = hi<<4 | lo
			}
		}
		if len(p.slab) == cap(p.slab) {
			p.slab = make([]devicePeer, 0, 2*cap(p.slab)+16)
		}
		p.slab = append(p.slab, devicePeer{})
		p.cur = &p.slab[len(p.slab)-1]
		p.st.peers[k] = p.cur
	case 'e':
		if p.cur != nil && string(key) == "endpoint" {
			p.cur.endpoint = parseEndpoint(value)
		}
	case 'l':
		switch string(key) {
		case "last_handshake_time_sec":
			p.sec = int64(parseUint(value))
		case "last_handshake_time_nsec":
			p.nse = int64(parseUint(value))
		case "listen_port":
			p.st.listenPort = uint16(parseUint(value))
		}
	case 'r':
		if p.cur != nil && string(key) == "rx_bytes" {
			p.cur.rx = parseUint(value)
		}
	case 't':
		if p.cur != nil && string(key) == "tx_bytes" {
			p.cur.tx = parseUint(value)
		}
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUint parses a decimal number; anything else gives 0, as the
// strconv calls before it did on error.
func parseUint(b []byte) uint64 {
	var v uint64
	if len(b) == 0 || len(b) > 20 {
		return 0
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}

// parseEndpoint parses an IPv4 "a.b.c.d:port" in place and anything else
// (IPv6) with netip.
func parseEndpoint(b []byte) netip.AddrPort {
	var a [4]byte
	part, digits := 0, 0
	v := 0
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v*10 + int(c-'0')
			digits++
			if v > 255 || digits > 3 {
				return slowEndpoint(b)
			}
		case c == '.' && part < 3 && digits > 0:
			a[part] = byte(v)
			part, digits, v = part+1, 0, 0
		case c == ':' && part == 3 && digits > 0:
			a[3] = byte(v)
			port := parseUint(b[i+1:])
			if port == 0 && string(b[i+1:]) != "0" || port > 65535 {
				return slowEndpoint(b)
			}
			return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(port))
		default:
			return slowEndpoint(b)
		}
	}
	return slowEndpoint(b)
}

func slowEndpoint(b []byte) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(string(b))
	return ap
}
