package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/wgmesh/wgmesh/forward"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// relay is one forward or expose with its listener bound.
type relay struct {
	spec   forward.Spec
	ln     net.Listener   // tcp
	pc     net.PacketConn // udp
	dialer forward.Dialer
}

// String describes the relay as running, with the address actually bound
// for a forward, e.g. "tcp:127.0.0.1:8080=beta:80".
func (r *relay) String() string {
	if r.spec.Flag == forward.FlagExpose {
		return r.spec.Proto + ":" + strings.TrimPrefix(r.spec.Listen, ":") + "=" + r.spec.Target
	}
	addr := ""
	if r.ln != nil {
		addr = r.ln.Addr().String()
	} else {
		addr = r.pc.LocalAddr().String()
	}
	return r.spec.Proto + ":" + addr + "=" + r.spec.Target
}

func (r *relay) close() {
	if r.ln != nil {
		r.ln.Close()
	}
	if r.pc != nil {
		r.pc.Close()
	}
}

func (r *relay) serve(ctx context.Context, log *slog.Logger) error {
	log = log.With("spec", r.spec.String())
	if r.ln != nil {
		return forward.ServeTCP(ctx, r.ln, r.dialer, r.spec.Target, log)
	}
	return forward.ServeUDP(ctx, r.pc, r.dialer, r.spec.Target, 0, log)
}

// meshDialer lets forwards dial into the mesh through the node.
type meshDialer struct{ n *node.Node }

func (d meshDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.n.Dial(ctx, network, addr)
}

// bindForwards binds the host listeners of the forwards.
func (d *Daemon) bindForwards() error {
	for _, s := range d.cfg.Forwards {
		r := &relay{spec: s}
		var err error
		if s.Proto == "tcp" {
			r.ln, err = net.Listen("tcp", s.Listen)
		} else {
			r.pc, err = net.ListenPacket("udp", s.Listen)
		}
		if err != nil {
			return fmt.Errorf("%s: cannot listen on %s: %w", s, s.Listen, err)
		}
		d.push("forward", r.close)
		d.relays = append(d.relays, r)
	}
	return nil
}

// listenMesh binds the mesh listeners of the exposes, and points the
// forwards at the node.
func (d *Daemon) listenMesh(context.Context) error {
	for _, r := range d.relays {
		r.dialer = meshDialer{d.n}
	}
	for _, s := range d.cfg.Exposes {
		r := &relay{spec: s, dialer: &net.Dialer{}}
		var err error
		if s.Proto == "tcp" {
			r.ln, err = d.n.Listen("tcp", s.Listen)
		} else {
			r.pc, err = d.n.ListenPacket("udp", s.Listen)
		}
		if err != nil {
			return fmt.Errorf("%s: cannot listen on mesh port %s: %w", s, strings.TrimPrefix(s.Listen, ":"), err)
		}
		d.push("expose", r.close)
		d.relays = append(d.relays, r)
	}
	return nil
}

// serveRelays serves every forward and expose; one failing stops the
// daemon (Done, Err).
func (d *Daemon) serveRelays(context.Context) error {
	if len(d.relays) == 0 {
		return nil
	}
	ctx, stop := context.WithCancel(d.run)
	var wg = &d.relayWG
	for _, r := range d.relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.serve(ctx, d.log); err != nil && ctx.Err() == nil {
				d.fail(fmt.Errorf("%s: %w", r.spec, err))
			}
		}()
	}
	d.push("relays", func() {
		stop()
		wg.Wait()
	})
	return nil
}

// checkTarget makes sure a forward's target names a member of the book or
// is an address.
func checkTarget(book *peerbook.Book, s forward.Spec) error {
	host := s.TargetHost()
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if _, ok := book.PeerByName(host); ok {
		return nil
	}
	names := make([]string, len(book.Peers))
	for i, p := range book.Peers {
		names[i] = p.Name
	}
	return fmt.Errorf("%s: no member named %q in the peer book %s (members: %s)", s, host, book.Source, strings.Join(names, ", "))
}
