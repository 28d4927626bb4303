package node

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
)

// The UAPI socket in TUN mode. wireguard-go's own handler (IpcHandle)
// would show only the members in the device, so `wg show` would hide
// every idle member (lazy.go). handleUAPI answers as IpcHandle does and
// adds to every get one peer section per idle member, with what its record
// holds: the configuration the node would give it on wake and the device
// facts it had when it went idle. Sets go to the device unchanged.

// uapiDevice is what handleUAPI needs of the device.
type uapiDevice interface {
	IpcGetOperation(io.Writer) error
	IpcSetOperation(io.Reader) error
}

// handleUAPI serves one UAPI connection until the client closes it. idle
// returns the idle members' view (nil: none).
func handleUAPI(c net.Conn, dev uapiDevice, idle func() *lazyView) {
	defer c.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	for {
		op, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		switch op {
		case "set=1\n":
			err = dev.IpcSetOperation(rw.Reader)
		case "get=1\n":
			var next byte
			if next, err = rw.ReadByte(); err != nil {
				return
			}
			if next != '\n' {
				writeErrno(rw, ipc.IpcErrorInvalid)
				continue
			}
			err = getWithIdle(rw.Writer, dev, idle())
		default:
			return // as wireguard-go: an unknown operation ends the connection
		}
		code := int64(0)
		if err != nil {
			code = ipc.IpcErrorUnknown
			var ipcErr *device.IPCError
			if errors.As(err, &ipcErr) {
				code = ipcErr.ErrorCode()
			}
		}
		writeErrno(rw, code)
	}
}

func writeErrno(rw *bufio.ReadWriter, code int64) {
	fmt.Fprintf(rw, "errno=%d\n\n", code)
	rw.Flush()
}

// getWithIdle writes the device's get answer, then a section for each
// idle member the device does not hold (one woken meanwhile is shown once,
// from the device), in key order.
func getWithIdle(w io.Writer, dev uapiDevice, view *lazyView) error {
	var buf bytes.Buffer
	if err := dev.IpcGetOperation(&buf); err != nil {
		return err
	}
	w.Write(buf.Bytes())
	if view == nil || len(view.idle) == 0 {
		return nil
	}
	inDevice := map[string]bool{}
	for line := range bytes.Lines(buf.Bytes()) {
		if k, ok := bytes.CutPrefix(line, []byte("public_key=")); ok {
			inDevice[string(bytes.TrimSpace(k))] = true
		}
	}
	keys := make([]string, 0, len(view.idle))
	recs := make(map[string]*idleRecord, len(view.idle))
	for k, rec := range view.idle {
		h := hex.EncodeToString(k[:])
		if rec.woken.Load() || inDevice[h] || rec.cfg == nil {
			continue
		}
		keys = append(keys, h)
		recs[h] = rec
	}
	slices.Sort(keys)
	var out uapiWriter
	for _, h := range keys {
		rec := recs[h]
		out.line("public_key", h)
		ep := rec.last.endpoint
		if !ep.IsValid() {
			ep = rec.cfg.endpoint
		}
		if ep.IsValid() {
			out.endpoint(ep)
		}
		if t := rec.last.lastHandshake; !t.IsZero() {
			out.line("last_handshake_time_sec", strconv.FormatInt(t.Unix(), 10))
			out.line("last_handshake_time_nsec", strconv.FormatInt(int64(t.Nanosecond()), 10))
		} else {
			out.line("last_handshake_time_sec", "0")
			out.line("last_handshake_time_nsec", "0")
		}
		out.line("tx_bytes", strconv.FormatUint(rec.last.tx, 10))
		out.line("rx_bytes", strconv.FormatUint(rec.last.rx, 10))
		out.keepalive(rec.cfg.keepalive)
		for _, p := range rec.cfg.allowedIPs {
			out.line("allowed_ip", p.Masked().String())
		}
	}
	_, err := io.WriteString(w, out.String())
	return err
}
