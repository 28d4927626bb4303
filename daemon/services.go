package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/meshdns"
	"github.com/wgmesh/wgmesh/metrics"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/proxy"
)

// services are the metrics endpoint, the proxies and the DNS server.
type services struct {
	metricsLn, socksLn, httpLn, dnsLn net.Listener
	dnsPC                             net.PacketConn

	metrics    *metrics.Metrics
	metricsSrv *http.Server
	socks      *proxy.SOCKS5
	httpProxy  *proxy.HTTP
	httpSrv    *http.Server
	dns        *meshdns.Server

	// idle closes keep-alive connections of the HTTP servers (0:
	// netutil.HTTPIdleTimeout); limits bound their connections. Tests
	// shrink them.
	idle                      time.Duration
	metricsLimits, httpLimits netutil.Limits
}

// Connection limits of the HTTP servers, per source IP and in total.
// Prometheus needs one connection per scraper; proxied browsers open
// dozens.
var (
	defaultMetricsLimits = netutil.Limits{Total: 64, PerClient: 16}
	defaultHTTPLimits    = netutil.Limits{Total: 1024, PerClient: 256}
)

// bindHost binds every host listener, so that a port in use fails the
// start-up before the node starts: the forwards, then the services. Every
// error names the forward, or the field and the address.
func (d *Daemon) bindHost(context.Context) error {
	if err := d.bindForwards(); err != nil {
		return err
	}
	s := d.svc
	c := &d.cfg
	bind := func(field, name, addr string, ln *net.Listener) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return &ConfigError{Field: field, Err: fmt.Errorf("cannot listen on %s: %w", addr, err)}
		}
		*ln = l
		d.push(name+" listener", func() { l.Close() })
		d.bound = append(d.bound, name, l.Addr().String())
		return nil
	}
	err := errors.Join(
		bind("Metrics", "metrics", c.Metrics, &s.metricsLn),
		bind("SOCKS", "socks", c.SOCKS, &s.socksLn),
		bind("HTTPProxy", "http_proxy", c.HTTPProxy, &s.httpLn),
	)
	if err != nil || c.DNS == "" {
		return err
	}
	if s.dnsPC, s.dnsLn, err = listenDNS(c.DNS); err != nil {
		return err
	}
	pc, ln := s.dnsPC, s.dnsLn
	d.push("dns listener", func() { pc.Close(); ln.Close() })
	d.bound = append(d.bound, "dns", pc.LocalAddr().String())
	// One name server for the host socket and, served by the node, for
	// port 53 of the mesh addresses (beside the registry zone on a
	// registry member). Its Book is set once the node exists.
	s.dns = &meshdns.Server{Logger: d.log.With("service", "dns")}
	return nil
}

// listenDNS binds UDP and TCP on one address, as a name server answers on
// both. With port 0 the system picks the UDP port and TCP takes the same
// number; if that TCP port is someone else's, another port is tried (a
// bounded number of times).
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	tries := 1
	if port == "0" {
		tries = 20
	}
	var err error
	for range tries {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, nil, &ConfigError{Field: "DNS", Err: fmt.Errorf("cannot listen on %s (udp): %w", addr, err)}
		}
		bound := pc.LocalAddr().String()
		var ln net.Listener
		if ln, err = net.Listen("tcp", bound); err == nil {
			return pc, ln, nil
		}
		pc.Close()
		err = &ConfigError{Field: "DNS", Err: fmt.Errorf("cannot listen on %s (tcp): %w", bound, err)}
	}
	return nil, nil, err
}

// serveMetrics serves /metrics, /healthz and /readyz; /readyz answers 503
// until the "ready" step and again from the start of the shutdown. A
// serving error stops the daemon.
func (d *Daemon) serveMetrics(context.Context) error {
	s := d.svc
	if s.metricsLn == nil {
		return nil
	}
	s.metrics = metrics.New(d.n)
	s.metricsSrv = netutil.NewHTTPServer(s.metrics.Handler(), s.idle)
	refused := netutil.NewRateLog(d.log.With("service", "metrics"), 0)
	ln := netutil.LimitListener(s.metricsLn, s.metricsLimits, refused)
	srv := s.metricsSrv
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.fail(&ConfigError{Field: "Metrics", Err: err})
		}
	}()
	d.push("metrics", func() {
		srv.Close()
		wg.Wait()
	})
	return nil
}

// startServices serves the proxies and DNS on the running node. In netstack
// mode DNS is answered on the mesh too (node.Config.MeshDNS), on port 53 of
// each of this member's mesh addresses.
func (d *Daemon) startServices(context.Context) error {
	s, n, c := d.svc, d.n, &d.cfg
	var wg sync.WaitGroup
	serve := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	// With an exit node the proxies pass destinations outside the mesh
	// while it is one, and resolve names outside the mesh with the
	// endpoint resolver (--resolver, else this host's).
	var exit func() bool
	if c.Node.ExitNode != "" {
		exit = n.ExitActive
		if s.socksLn != nil || s.httpLn != nil {
			d.log.Info("the proxies send destinations outside the mesh through the exit node; names outside the mesh are resolved by this host's resolver (or --resolver), not through the exit node", "exit_node", c.Node.ExitNode)
		}
	}
	var resolver proxy.Resolver
	if c.Node.Resolver != nil {
		resolver = c.Node.Resolver
	}
	if s.socksLn != nil {
		s.socks = &proxy.SOCKS5{Dialer: n, Book: n.Book, Auth: c.ProxyAuth, Allow: c.ProxyAllow, Exit: exit, Resolver: resolver, Logger: d.log.With("proxy", "socks5")}
		ln := s.socksLn
		serve(func() { s.socks.Serve(ln) })
	}
	if s.httpLn != nil {
		s.httpProxy = &proxy.HTTP{Dialer: n, Book: n.Book, Auth: c.ProxyAuth, Allow: c.ProxyAllow, Exit: exit, Resolver: resolver, Logger: d.log.With("proxy", "http")}
		s.httpSrv = netutil.NewHTTPServer(s.httpProxy, s.idle)
		refused := netutil.NewRateLog(d.log.With("proxy", "http"), 0)
		ln := netutil.LimitListener(s.httpLn, s.httpLimits, refused)
		serve(func() { s.httpSrv.Serve(ln) })
	}
	if s.dnsPC != nil {
		pc, ln := s.dnsPC, s.dnsLn
		serve(func() { s.dns.ServePacketConn(pc) })
		serve(func() { s.dns.ServeListener(ln) })
		port := uint16(node.DefaultRegistryPort)
		if c.Node.RegistryPort != 0 {
			port = c.Node.RegistryPort
		}
		for _, a := range n.Status().Addresses {
			d.meshDNS = append(d.meshDNS, netip.AddrPortFrom(a, port).String())
		}
	}
	d.push("services", func() {
		if s.socks != nil {
			s.socks.Close()
		}
		if s.httpSrv != nil {
			s.httpSrv.Close()
			s.httpProxy.Close()
		}
		if s.dns != nil {
			s.dns.Close()
		}
		// The servers own their listeners; closed here too, so that no
		// Serve outlives the wait whatever its Close does.
		for _, c := range []interface{ Close() error }{s.socksLn, s.httpLn, s.dnsLn, s.dnsPC} {
			if c != nil {
				c.Close()
			}
		}
		wg.Wait()
	})
	return nil
}

// readyAttrs are the bound addresses for the ready log line: with port 0
// the system chose them.
func (d *Daemon) readyAttrs() []any {
	attrs := append([]any(nil), d.bound...)
	if len(d.meshDNS) > 0 {
		attrs = append(attrs, "mesh_dns", strings.Join(d.meshDNS, ","))
	}
	return attrs
}
