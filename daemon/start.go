package daemon

import (
	"context"
	"fmt"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

// readKey warns about risky settings and reads the private key.
func (d *Daemon) readKey(context.Context) error {
	// A forward reaches one fixed target, so a reachable one is allowed,
	// but it lets whoever reaches it into the mesh as this member: say so,
	// as the proxies refuse the same without credentials.
	for _, s := range d.cfg.Forwards {
		if !s.Loopback() {
			d.log.Warn(fmt.Sprintf("%s listens on a non-loopback address: anyone who can reach %s reaches %s in the mesh as this member; bind 127.0.0.1 unless that is meant", s, s.Listen, s.Target))
		}
	}
	d.key = d.cfg.Node.PrivateKey
	if d.key.IsZero() {
		key, err := peerbook.ReadKeyFile(d.cfg.KeyFile)
		if err != nil {
			return err
		}
		d.key = key
	}
	return nil
}

// check refuses what would fail later, before the slow part: an open
// proxy, a forward to no member, a control socket another node owns.
func (d *Daemon) check(context.Context) error {
	c := &d.cfg
	auth := c.ProxyAuth != nil
	if c.SOCKS != "" {
		if err := proxy.CheckListenFlag("SOCKS", "ProxyAuth", c.SOCKS, auth); err != nil {
			return err
		}
	}
	if c.HTTPProxy != "" {
		if err := proxy.CheckListenFlag("HTTPProxy", "ProxyAuth", c.HTTPProxy, auth); err != nil {
			return err
		}
	}
	for _, s := range c.Forwards {
		if err := checkTarget(d.first.Book, s); err != nil {
			return err
		}
	}
	if c.ControlPath != "" {
		if err := control.Check(c.ControlPath); err != nil {
			return &ConfigError{Field: "ControlPath", Err: err}
		}
	}
	d.svc = &services{metricsLimits: defaultMetricsLimits, httpLimits: defaultHTTPLimits}
	if h := d.cfg.hooks; h != nil && h.services != nil {
		h.services(d.svc)
	}
	return nil
}

// startNode creates the node on the first book and brings it up.
func (d *Daemon) startNode(ctx context.Context) error {
	ncfg := d.cfg.Node
	ncfg.Book = d.first.Book
	ncfg.PrivateKey = d.key
	if ncfg.StateDir == "" {
		ncfg.StateDir = d.cfg.StateDir
	}
	if ncfg.Logger == nil {
		ncfg.Logger = d.log
	}
	if d.svc.dns != nil {
		ncfg.MeshDNS = d.svc.dns
	}
	n, err := node.New(ncfg)
	if err != nil {
		return err
	}
	d.push("node", func() { n.Close() })
	if err := n.Up(ctx); err != nil {
		return err
	}
	d.n = n
	if d.svc.dns != nil {
		d.svc.dns.Book = n.Book
	}
	return nil
}
