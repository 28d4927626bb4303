package netstack

import (
	"encoding/binary"
	"errors"
)

// GSO on the way out. gVisor hands the endpoint TCP super-segments of up
// to 64 KiB (host GSO, as if a NIC would cut them) whose TCP checksum holds
// only the pseudo-header sum. The endpoint cuts them into packets of at
// most MSS payload bytes, written straight into wireguard-go's buffers, and
// completes every header: IP length, IPv4 ID and header checksum, TCP
// sequence number, flags and checksum. One trip through gVisor's TCP and IP
// layers then yields up to 47 packets instead of one.

// maxTCPHeaders bounds the IP and TCP headers of one packet: an IPv4
// header with options (60) or a plain IPv6 header (40), and a TCP header
// with options (60).
const maxTCPHeaders = 60 + 60

var (
	errNotTCP    = errors.New("netstack: not a plain TCP/IP packet")
	errSmallBuf  = errors.New("netstack: packet does not fit the buffer")
	errZeroMSS   = errors.New("netstack: zero MSS")
	errTooMany   = errors.New("netstack: too many segments")
	errTruncated = errors.New("netstack: truncated packet")
)

// tcpHeaders is a copy of the IP and TCP headers at the start of a packet.
type tcpHeaders struct {
	b      [maxTCPHeaders]byte
	ipLen  int
	tcpLen int
}

func (h *tcpHeaders) len() int { return h.ipLen + h.tcpLen }

// parse copies and checks the headers at the start of the packet held in
// r. It accepts IPv4 (unfragmented) and IPv6 without extension headers,
// carrying TCP.
func (h *tcpHeaders) parse(r *sliceReader) error {
	if r.peek(h.b[:1]) < 1 {
		return errTruncated
	}
	switch h.b[0] >> 4 {
	case 4:
		h.ipLen = int(h.b[0]&0x0f) * 4
		if h.ipLen < ipv4HeaderLen {
			return errNotTCP
		}
	case 6:
		h.ipLen = ipv6HeaderLen
	default:
		return errNotTCP
	}
	if r.peek(h.b[:h.ipLen+tcpHeaderLen]) < h.ipLen+tcpHeaderLen {
		return errTruncated
	}
	ip := h.b[:h.ipLen]
	if ip[0]>>4 == 4 {
		// A fragment (MF set or an offset) cannot be segmented.
		if ip[9] != protoTCP || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return errNotTCP
		}
	} else if ip[6] != protoTCP {
		return errNotTCP
	}
	h.tcpLen = int(h.b[h.ipLen+12]>>4) * 4
	if h.tcpLen < tcpHeaderLen {
		return errNotTCP
	}
	if r.peek(h.b[:h.len()]) < h.len() {
		return errTruncated
	}
	return nil
}

// sliceReader reads a packet held in several slices in order.
type sliceReader struct {
	s   [][]byte
	i   int // current slice
	off int // offset in it
}

func (r *sliceReader) reset(s [][]byte) { *r = sliceReader{s: s} }

// peek copies the next bytes into p without consuming them and returns
// how many it copied.
func (r *sliceReader) peek(p []byte) int {
	n, i, off := 0, r.i, r.off
	for n < len(p) && i < len(r.s) {
		c := copy(p[n:], r.s[i][off:])
		n += c
		off += c
		if off == len(r.s[i]) {
			i, off = i+1, 0
		}
	}
	return n
}

// read copies the next bytes into p, consuming them, and returns how many
// it copied.
func (r *sliceReader) read(p []byte) int {
	n := 0
	for n < len(p) && r.i < len(r.s) {
		c := copy(p[n:], r.s[r.i][r.off:])
		n += c
		r.off += c
		if r.off == len(r.s[r.i]) {
			r.i, r.off = r.i+1, 0
		}
	}
	return n
}

// skip consumes n bytes and returns how many it skipped.
func (r *sliceReader) skip(n int) int {
	done := 0
	for done < n && r.i < len(r.s) {
		c := min(n-done, len(r.s[r.i])-r.off)
		done += c
		r.off += c
		if r.off == len(r.s[r.i]) {
			r.i, r.off = r.i+1, 0
		}
	}
	return done
}

// gsoSegments returns how many packets a TCP packet of payload bytes
// becomes when cut at mss.
func gsoSegments(payload, mss int) int {
	if payload <= mss {
		return 1
	}
	return (payload + mss - 1) / mss
}

// gsoSegmentSize returns the size of the packets (all but possibly the
// last) that gsoSplit cuts the TCP packet held in pkt into.
func gsoSegmentSize(pkt [][]byte, size, mss int) (int, error) {
	if mss <= 0 {
		return 0, errZeroMSS
	}
	var h tcpHeaders
	var r sliceReader
	r.reset(pkt)
	if err := h.parse(&r); err != nil {
		return 0, err
	}
	payload := size - h.len()
	if payload < 0 {
		return 0, errTruncated
	}
	return h.len() + min(mss, payload), nil
}

// gsoSplit cuts the TCP packet held in pkt (size bytes in all) into
// packets of at most mss payload bytes, starting with segment first, and
// writes them to bufs[i][offset:], their sizes to sizes[i]. It returns how
// many packets it wrote and whether it wrote the last segment; when bufs
// run out first, call it again with first advanced by n. A packet of at
// most mss payload bytes comes out as one packet with its checksums
// completed.
func gsoSplit(pkt [][]byte, size, mss, first int, bufs [][]byte, sizes []int, offset int) (n int, done bool, err error) {
	if mss <= 0 {
		return 0, false, errZeroMSS
	}
	var h tcpHeaders
	var r sliceReader
	r.reset(pkt)
	if err := h.parse(&r); err != nil {
		return 0, false, err
	}
	hdrLen := h.len()
	payload := size - hdrLen
	if payload < 0 {
		return 0, false, errTruncated
	}
	segs := gsoSegments(payload, mss)
	if first >= segs {
		return 0, true, nil
	}
	// IPv4 IDs advance by one per segment; 16-bit IP lengths bound the
	// whole packet, so more segments than that mean a broken caller.
	if segs > 1<<16 {
		return 0, false, errTooMany
	}
	r.skip(hdrLen + first*mss)
	v4 := h.b[0]>>4 == 4
	id := binary.BigEndian.Uint16(h.b[4:])
	tcpOff := h.ipLen
	seq := binary.BigEndian.Uint32(h.b[tcpOff+4:])
	flags := h.b[tcpOff+13]
	for k := first; k < segs && n < len(bufs); k++ {
		pl := min(mss, payload-k*mss)
		buf := bufs[n][offset:]
		if len(buf) < hdrLen+pl || hdrLen+pl > 0xffff {
			return n, false, errSmallBuf
		}
		copy(buf, h.b[:hdrLen])
		if got := r.read(buf[hdrLen : hdrLen+pl]); got != pl {
			return n, false, errTruncated
		}
		ip := buf[:h.ipLen]
		tcp := buf[tcpOff : hdrLen+pl]
		if v4 {
			binary.BigEndian.PutUint16(ip[2:], uint16(hdrLen+pl))
			binary.BigEndian.PutUint16(ip[4:], id+uint16(k))
			setIPv4Checksum(ip)
		} else {
			binary.BigEndian.PutUint16(ip[4:], uint16(h.tcpLen+pl))
		}
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(k*mss))
		f := flags
		if k > 0 {
			f &^= tcpFlagCWR
		}
		if k < segs-1 {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		tcp[13] = f
		setTCPChecksum(ip, tcp)
		sizes[n] = hdrLen + pl
		n++
		if k == segs-1 {
			return n, true, nil
		}
	}
	return n, false, nil
}
