package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/meshdns"
	"github.com/wgmesh/wgmesh/metrics"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/proxy"
)

// serviceFlags checks the options of the services `up` serves besides
// forwards: metrics, proxies and DNS, and the endpoint resolver.
func serviceFlags(c *cli.Context, cfg *upConfig) error {
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"metrics", &cfg.metrics}, {"socks", &cfg.socks}, {"http-proxy", &cfg.httpProxy}, {"dns", &cfg.dns}} {
		if v := c.String(f.name); v != "" {
			if *f.dst, err = listenAddr("--"+f.name, v); err != nil {
				return err
			}
		}
	}
	if v := c.String("resolver"); v != "" {
		if cfg.resolver, err = resolverAddr(v); err != nil {
			return err
		}
	}
	if v := c.String("registry"); v != "" {
		addr, ok := strings.CutPrefix(v, "dns://")
		if !ok {
			return usagef("--registry %q: want dns://HOST:PORT, e.g. dns://203.0.113.5:53", v)
		}
		if cfg.registry, err = resolverAddr(addr); err != nil {
			return usagef("--registry %q: want dns://HOST:PORT, e.g. dns://203.0.113.5:53", v)
		}
	}
	cfg.registryZone = c.String("registry-zone")
	if cfg.registryZone != "" && cfg.registry == "" {
		return usagef("--registry-zone needs --registry")
	}
	if c.IsSet("registry-listen") {
		p := c.Int("registry-listen")
		if p < 1 || p > 65535 {
			return usagef("--registry-listen %d: want a port from 1 to 65535", p)
		}
		cfg.registryPort = uint16(p)
	}
	cfg.authFile = c.String("socks-auth-file")
	for _, v := range c.StringSlice("proxy-allow") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return usagef("--proxy-allow %q: want a CIDR prefix such as 192.168.1.0/24 or 2001:db8::/32", v)
		}
		if p != p.Masked() {
			return usagef("--proxy-allow %s: not a network address; did you mean %s?", p, p.Masked())
		}
		cfg.proxyAllow = append(cfg.proxyAllow, p)
	}
	proxies := cfg.socks != "" || cfg.httpProxy != ""
	if !proxies && cfg.authFile != "" {
		return usagef("--socks-auth-file needs --socks or --http-proxy")
	}
	if !proxies && len(cfg.proxyAllow) > 0 {
		return usagef("--proxy-allow needs --socks or --http-proxy")
	}
	return nil
}

// listenAddr checks a listen address given to flag. A bare port means
// that port on 127.0.0.1: every listener binds loopback unless told
// otherwise.
func listenAddr(flag, v string) (string, error) {
	if _, err := strconv.ParseUint(v, 10, 16); err == nil {
		v = "127.0.0.1:" + v
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = perr
		}
	}
	if err == nil && host != "" && host != "localhost" {
		if _, aerr := netip.ParseAddr(host); aerr != nil {
			err = aerr
		}
	}
	if err != nil {
		return "", usagef("%s %q: want HOST:PORT with an IP address, or a PORT on 127.0.0.1", flag, v)
	}
	return v, nil
}

// resolverAddr checks --resolver: HOST:PORT, or an IP address meaning its
// port 53.
func resolverAddr(v string) (string, error) {
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil && host == "" {
		err = errors.New("no host")
	}
	if err == nil {
		if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || p == 0 {
			err = errors.New("bad port")
		}
	}
	if err != nil {
		return "", usagef("--resolver %q: want the DNS server as HOST:PORT, e.g. 127.0.0.1:53", v)
	}
	return v, nil
}

// loadServiceFiles reads the proxies' credentials and builds the resolver
// for endpoint hostnames.
func loadServiceFiles(cfg upConfig) (*proxy.Credentials, *net.Resolver, error) {
	var creds *proxy.Credentials
	if cfg.authFile != "" {
		var err error
		if creds, err = proxy.LoadCredentials(cfg.authFile); err != nil {
			return nil, nil, fmt.Errorf("--socks-auth-file: %w", err)
		}
	}
	// An open proxy on a reachable address is refused before anything
	// starts.
	if cfg.socks != "" {
		if err := proxy.CheckListen(cfg.socks, creds != nil); err != nil {
			return nil, nil, err
		}
	}
	if cfg.httpProxy != "" {
		if err := proxy.CheckListenFlag("--http-proxy", "--socks-auth-file", cfg.httpProxy, creds != nil); err != nil {
			return nil, nil, err
		}
	}
	if cfg.resolver == "" {
		return creds, nil, nil
	}
	server := cfg.resolver
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	return creds, r, nil
}

// services are the metrics endpoint, the proxies and the DNS server of a
// running `up`.
type services struct {
	metricsLn, socksLn, httpLn, dnsLn net.Listener
	dnsPC                             net.PacketConn

	metrics    *metrics.Metrics
	metricsSrv *http.Server
	socks      *proxy.SOCKS5
	httpProxy  *proxy.HTTP
	httpSrv    *http.Server
	dns        *meshdns.Server
	meshDNS    []string // mesh addresses the DNS server answers on
	bound      []any    // flag name and bound address, for the ready line

	// idle closes keep-alive connections of the HTTP servers (0:
	// netutil.HTTPIdleTimeout); limits bound their connections. Tests
	// shrink them.
	idle                      time.Duration
	metricsLimits, httpLimits netutil.Limits

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Connection limits of the HTTP servers, per source IP and in total.
// Prometheus needs one connection per scraper; proxied browsers open
// dozens.
var (
	defaultMetricsLimits = netutil.Limits{Total: 64, PerClient: 16}
	defaultHTTPLimits    = netutil.Limits{Total: 1024, PerClient: 256}
)

// bindServices binds the host listeners of the services, so that a port
// in use fails start-up before the node starts. Every error names the
// flag and the address.
func bindServices(cfg upConfig) (*services, error) {
	s := &services{metricsLimits: defaultMetricsLimits, httpLimits: defaultHTTPLimits}
	bind := func(flag, addr string, ln *net.Listener) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: cannot listen on %s: %w", flag, addr, err)
		}
		*ln = l
		s.bound = append(s.bound, strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_"), l.Addr().String())
		return nil
	}
	err := errors.Join(
		bind("--metrics", cfg.metrics, &s.metricsLn),
		bind("--socks", cfg.socks, &s.socksLn),
		bind("--http-proxy", cfg.httpProxy, &s.httpLn),
	)
	if err == nil && cfg.dns != "" {
		s.dnsPC, s.dnsLn, err = listenDNS(cfg.dns)
		if err == nil {
			s.bound = append(s.bound, "dns", s.dnsPC.LocalAddr().String())
		}
	}
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	return s, nil
}

// closeListeners releases the listeners of services that never started.
func (s *services) closeListeners() {
	for _, ln := range []net.Listener{s.metricsLn, s.socksLn, s.httpLn, s.dnsLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.dnsPC != nil {
		s.dnsPC.Close()
	}
}

// start creates the services on the running node and serves the proxies
// and DNS. In netstack mode DNS is answered on the mesh too, on port 53 of
// each of this member's mesh addresses.
func (s *services) start(cfg upConfig, n *node.Node, creds *proxy.Credentials, log *slog.Logger) error {
	if s.metricsLn != nil {
		s.metrics = metrics.New(n)
		s.metricsSrv = netutil.NewHTTPServer(s.metrics.Handler(), s.idle)
		refused := netutil.NewRateLog(log.With("service", "metrics"), 0)
		s.metricsLn = netutil.LimitListener(s.metricsLn, s.metricsLimits, refused)
	}
	if s.socksLn != nil {
		s.socks = &proxy.SOCKS5{Dialer: n, Book: n.Book, Auth: creds, Allow: cfg.proxyAllow, Logger: log.With("proxy", "socks5")}
		ln := s.socksLn
		s.goServe(func() { s.socks.Serve(ln) })
	}
	if s.httpLn != nil {
		s.httpProxy = &proxy.HTTP{Dialer: n, Book: n.Book, Auth: creds, Allow: cfg.proxyAllow, Logger: log.With("proxy", "http")}
		s.httpSrv = netutil.NewHTTPServer(s.httpProxy, s.idle)
		refused := netutil.NewRateLog(log.With("proxy", "http"), 0)
		ln := netutil.LimitListener(s.httpLn, s.httpLimits, refused)
		s.goServe(func() { s.httpSrv.Serve(ln) })
	}
	if s.dnsPC == nil {
		return nil
	}
	pc, ln := s.dnsPC, s.dnsLn
	s.goServe(func() { s.dns.ServePacketConn(pc) })
	s.goServe(func() { s.dns.ServeListener(ln) })
	// The node itself answers on its mesh addresses (Config.MeshDNS).
	port := uint16(node.DefaultRegistryPort)
	if cfg.registryPort != 0 {
		port = cfg.registryPort
	}
	for _, a := range n.Status().Addresses {
		s.meshDNS = append(s.meshDNS, netip.AddrPortFrom(a, port).String())
	}
	return nil
}

func (s *services) goServe(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// serveMetrics serves the metrics endpoint; a serving error ends `up`
// through failed.
func (s *services) serveMetrics(failed chan<- error) {
	if s.metricsSrv == nil {
		return
	}
	ln := s.metricsLn
	s.goServe(func() {
		if err := s.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("--metrics: %w", err)
		}
	})
}

func (s *services) setReady(ready bool) {
	if s.metrics != nil {
		s.metrics.SetReady(ready)
	}
}

// readyAttrs are the bound addresses for the ready log line: with port 0
// the system chose them.
func (s *services) readyAttrs() []any {
	attrs := s.bound
	if len(s.meshDNS) > 0 {
		attrs = append(attrs, "mesh_dns", strings.Join(s.meshDNS, ","))
	}
	return attrs
}

// close stops every service and waits for them. It must run before the
// node closes, as the services use it.
func (s *services) close() {
	s.closeOnce.Do(func() {
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
		if s.metricsSrv != nil {
			s.metricsSrv.Close()
		}
		s.closeListeners()
		s.wg.Wait()
	})
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
			return nil, nil, fmt.Errorf("--dns: cannot listen on %s (udp): %w", addr, err)
		}
		bound := pc.LocalAddr().String()
		var ln net.Listener
		if ln, err = net.Listen("tcp", bound); err == nil {
			return pc, ln, nil
		}
		pc.Close()
		err = fmt.Errorf("--dns: cannot listen on %s (tcp): %w", bound, err)
	}
	return nil, nil, err
}
