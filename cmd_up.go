package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/forward"
	"github.com/wgmesh/wgmesh/meshdns"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

func (e *env) upCommand() *cli.Command {
	return &cli.Command{
		Name:      "up",
		Usage:     "join the mesh and run until SIGINT or SIGTERM (the book is followed live; SIGHUP re-reads it)",
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			configFlag(),
			instanceFlag(),
			&cli.StringFlag{Name: "book", Usage: "peer book `FILE` (watched for changes), https:// URL (polled) or etcd://HOST:PORT[,HOST:PORT...]/PREFIX (watched) (required, here or as book in --config)"},
			&cli.StringFlag{Name: "key", Usage: "private key `FILE`, mode 0600 (required, here or as key in --config)"},
			&cli.StringFlag{Name: "mode", Value: "netstack", Usage: "`MODE`: netstack (userspace network stack, no root) or tun (kernel interface; root or CAP_NET_ADMIN)"},
			&cli.StringFlag{Name: "interface", DefaultText: "wgmesh0; utun on macOS", Usage: "TUN interface `NAME` (--mode tun)"},
			&cli.BoolFlag{Name: "masquerade", Usage: "source-NAT mesh traffic into this member's subnets, for LAN routers with no route back to the mesh (--mode tun)"},
			&cli.IntFlag{Name: "listen-port", DefaultText: "from the book", Usage: "UDP `PORT` to bind instead of the book's; 0 lets the system choose (see status)"},
			&cli.StringSliceFlag{Name: "forward", Usage: "relay a host listener to a mesh target; `SPEC` is PROTO:HOST:PORT=TARGET:PORT, e.g. tcp:127.0.0.1:8080=beta:80 (repeatable)"},
			&cli.StringSliceFlag{Name: "expose", Usage: "relay a mesh port to a host target; `SPEC` is PROTO:PORT=HOST:PORT, e.g. tcp:22=127.0.0.1:22 (repeatable)"},
			controlFlag(),

			&cli.StringFlag{Name: "trusted-signers", Usage: "accept only books signed (BOOK.sig) by a key in this OpenSSH allowed_signers `FILE`, never an older serial"},
			&cli.StringFlag{Name: "state-dir", DefaultText: filepath.Join(defaultStateDir(), "INSTANCE"), Usage: "`DIR` keeping the highest accepted serial, the last good remote book and (--mode tun) the sysctl values to restore"},
			&cli.DurationFlag{Name: "book-poll", Value: booksource.DefaultPollInterval, Usage: "fetch a --book URL every `DURATION`"},
			&cli.BoolFlag{Name: "allow-http", Usage: "allow a plain http:// --book URL (use with --trusted-signers or on a trusted network)"},
			&cli.StringFlag{Name: "book-ca", Usage: "trust the CA certificates in PEM `FILE` for a --book https:// URL, besides the system's"},
			&cli.DurationFlag{Name: "resolve-interval", Value: node.DefaultResolveInterval, Usage: "re-resolve endpoint hostnames every `DURATION`"},
			&cli.StringFlag{Name: "resolver", DefaultText: "the system's", Usage: "DNS server `HOST:PORT` for endpoint hostnames"},
			&cli.StringFlag{Name: "registry", DefaultText: "the book's registry members", Usage: "also ask this DNS-SD registry outside the mesh for endpoints of members behind NAT, as dns://`HOST:PORT` (e.g. CoreDNS with the wgsd plugin)"},
			&cli.StringFlag{Name: "registry-zone", DefaultText: "the mesh domain", Usage: "`ZONE` of --registry"},
			&cli.IntFlag{Name: "registry-listen", Value: 53, Usage: "`PORT` on mesh addresses where registry members answer (and are asked)"},
			&cli.StringFlag{Name: "metrics", DefaultText: "off", Usage: "serve Prometheus /metrics, /healthz and /readyz on `ADDR` (HOST:PORT; a bare PORT means 127.0.0.1:PORT)"},
			&cli.StringFlag{Name: "socks", DefaultText: "off", Usage: "serve a SOCKS5 proxy into the mesh on `ADDR` (HOST:PORT or PORT on 127.0.0.1)"},
			&cli.StringFlag{Name: "http-proxy", DefaultText: "off", Usage: "serve an HTTP proxy into the mesh on `ADDR` (HOST:PORT or PORT on 127.0.0.1)"},
			&cli.StringFlag{Name: "socks-auth-file", Usage: "require the user:password pairs of `FILE` (mode 0600) on --socks and --http-proxy"},
			&cli.StringSliceFlag{Name: "proxy-allow", Usage: "let the proxies reach `CIDR` besides members and their subnets (repeatable)"},
			&cli.StringFlag{Name: "dns", DefaultText: "off", Usage: "answer DNS for member names on `ADDR` (UDP and TCP; HOST:PORT or PORT on 127.0.0.1), and on port 53 of this member's mesh addresses"},
		}, etcdFlags()...),
		Action: e.up,
	}
}

// upConfig is the checked command line of `up`.
type upConfig struct {
	book        string // a file or a URL
	bookURL     bool
	bookEtcd    bool             // an etcd:// book
	etcd        etcdbook.Options // how to reach it
	keyPath     string
	listenPort  int
	forwards    []forward.Spec
	exposes     []forward.Spec
	controlPath string
	mode        node.Mode
	ifname      string
	masquerade  bool

	trustedSigners  string
	stateDir        string
	bookPoll        time.Duration
	allowHTTP       bool
	bookCA          string
	resolveInterval time.Duration
	resolver        string // HOST:PORT, "" for the system's
	registry        string // HOST:PORT of a registry outside the mesh
	registryZone    string
	registryPort    uint16

	metrics, socks, httpProxy, dns string // listen addresses, "" when off
	authFile                       string
	proxyAllow                     []netip.Prefix
}

func upFlags(c *cli.Context) (upConfig, error) {
	cfg := upConfig{book: c.String("book"), keyPath: c.String("key"), controlPath: c.String("control")}
	if _, err := args(c); err != nil {
		return cfg, err
	}
	if cfg.book == "" || cfg.keyPath == "" {
		return cfg, usagef("up needs --book FILE and --key FILE (or book and key in a --config file)")
	}
	switch mode := node.Mode(c.String("mode")); mode {
	case node.ModeNetstack, node.ModeTUN:
		cfg.mode = mode
	default:
		return cfg, usagef("--mode %q: want netstack or tun", mode)
	}
	cfg.ifname, cfg.masquerade = c.String("interface"), c.Bool("masquerade")
	if cfg.mode != node.ModeTUN && (cfg.ifname != "" || cfg.masquerade) {
		return cfg, usagef("--interface and --masquerade need --mode tun")
	}
	if c.IsSet("listen-port") {
		switch p := c.Int("listen-port"); {
		case p == 0:
			cfg.listenPort = node.EphemeralPort
		case p > 0 && p <= 65535:
			cfg.listenPort = p
		default:
			return cfg, usagef("--listen-port %d: want 0 (any free port) or 1 to 65535", p)
		}
	}
	for _, v := range c.StringSlice("forward") {
		s, err := forward.ParseForward(v)
		if err != nil {
			return cfg, usageError{err}
		}
		cfg.forwards = append(cfg.forwards, s)
	}
	for _, v := range c.StringSlice("expose") {
		s, err := forward.ParseExpose(v)
		if err != nil {
			return cfg, usageError{err}
		}
		cfg.exposes = append(cfg.exposes, s)
	}
	if err := bookFlags(c, &cfg); err != nil {
		return cfg, err
	}
	if err := serviceFlags(c, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// relay is one --forward or --expose with its listener bound.
type relay struct {
	spec   forward.Spec
	ln     net.Listener   // tcp
	pc     net.PacketConn // udp
	dialer forward.Dialer
}

// String describes the relay as running, with the address actually bound
// for a --forward, e.g. "tcp:127.0.0.1:8080=beta:80".
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

func (e *env) up(c *cli.Context) (err error) {
	cfg, instance, err := e.upSettings(c)
	if err != nil {
		return err
	}
	// A forward reaches one fixed target, so a reachable one is allowed,
	// but it lets whoever reaches it into the mesh as this member: say so,
	// as the proxies refuse the same without credentials.
	for _, s := range cfg.forwards {
		if !s.Loopback() {
			e.log.Warn(fmt.Sprintf("%s listens on a non-loopback address: anyone who can reach %s reaches %s in the mesh as this member; bind 127.0.0.1 unless that is meant", s, s.Listen, s.Target))
		}
	}
	ctx := c.Context
	// SIGHUP re-reads the book. Caught from the start: its default action
	// would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	key, err := peerbook.ReadKeyFile(cfg.keyPath)
	if err != nil {
		return err
	}
	creds, resolver, err := loadServiceFiles(cfg)
	if err != nil {
		return err
	}

	// Everything below is undone, in reverse, if start-up fails.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	srcCtx, stopSource := context.WithCancel(ctx)
	src, err := e.startBookSource(srcCtx, cfg, hup)
	if err != nil {
		stopSource()
		return err
	}
	undo = append(undo, func() { stopSource(); src.drain() })
	book := src.first.Book
	for _, s := range cfg.forwards {
		if err := checkTarget(book, s); err != nil {
			return err
		}
	}
	// Fail before the slow part if another node owns the socket.
	if err := control.Check(cfg.controlPath); err != nil {
		return fmt.Errorf("--control: %w", err)
	}

	// Host listeners first: a port in use is the likeliest mistake and
	// costs nothing to find before the node starts.
	var relays []*relay
	for _, s := range cfg.forwards {
		r := &relay{spec: s}
		var lerr error
		if s.Proto == "tcp" {
			r.ln, lerr = net.Listen("tcp", s.Listen)
		} else {
			r.pc, lerr = net.ListenPacket("udp", s.Listen)
		}
		if lerr != nil {
			return fmt.Errorf("%s: cannot listen on %s: %w", s, s.Listen, lerr)
		}
		undo = append(undo, r.close)
		relays = append(relays, r)
	}
	svc, err := bindServices(cfg)
	if err != nil {
		return err
	}
	undo = append(undo, svc.closeListeners)

	ncfg := node.Config{
		Book:            book,
		PrivateKey:      key,
		ListenPort:      cfg.listenPort,
		ResolveInterval: cfg.resolveInterval,
		Registry:        cfg.registry,
		RegistryZone:    cfg.registryZone,
		RegistryPort:    cfg.registryPort,
		Mode:            cfg.mode,
		InterfaceName:   cfg.ifname,
		Masquerade:      cfg.masquerade,
		StateDir:        cfg.stateDir,
		Logger:          e.log,
	}
	if resolver != nil {
		ncfg.Resolver = resolver
	}
	if svc.dnsPC != nil {
		// One name server for the host socket and, served by the node,
		// for port 53 of the mesh addresses (beside the registry zone on
		// a registry member). Its Book is set once the node exists.
		svc.dns = &meshdns.Server{Logger: e.log.With("service", "dns")}
		ncfg.MeshDNS = svc.dns
	}
	var endpoints *etcdEndpoints
	if cfg.bookEtcd {
		// Observed endpoints in etcd: members behind NAT find each other
		// there, with no registry member.
		self := "unknown"
		if p, ok := book.PeerByKey(key.Public()); ok {
			self = p.Name
		}
		if endpoints, err = startEtcdEndpoints(cfg, self); err != nil {
			return err
		}
		undo = append(undo, endpoints.close)
		ncfg.EndpointDirectory = endpoints.dir
	}
	n, err := node.New(ncfg)
	if err != nil {
		return err
	}
	if svc.dns != nil {
		svc.dns.Book = n.Book
	}
	undo = append(undo, func() { n.Close() })
	if err := n.Up(ctx); err != nil {
		return err
	}
	for _, r := range relays {
		r.dialer = meshDialer{n}
	}

	for _, s := range cfg.exposes {
		r := &relay{spec: s, dialer: &net.Dialer{}}
		var lerr error
		if s.Proto == "tcp" {
			r.ln, lerr = n.Listen("tcp", s.Listen)
		} else {
			r.pc, lerr = n.ListenPacket("udp", s.Listen)
		}
		if lerr != nil {
			return fmt.Errorf("%s: cannot listen on mesh port %s: %w", s, strings.TrimPrefix(s.Listen, ":"), lerr)
		}
		undo = append(undo, r.close)
		relays = append(relays, r)
	}

	if err := svc.start(cfg, n, creds, e.log); err != nil {
		return err
	}
	undo = append(undo, svc.close)

	rep := &reporter{n: n}
	ctl, err := control.ServeReport(ctx, cfg.controlPath, rep)
	if err != nil {
		return fmt.Errorf("--control: %w", err)
	}
	undo = append(undo, func() { ctl.Close() })

	serveCtx, stopRelays := context.WithCancel(ctx)
	defer stopRelays()
	var wg sync.WaitGroup
	failed := make(chan error, len(relays)+1)
	for _, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.serve(serveCtx, e.log); err != nil {
				failed <- fmt.Errorf("%s: %w", r.spec, err)
			}
		}()
	}
	svc.serveMetrics(failed)
	svc.setReady(true)
	if endpoints != nil {
		wg.Add(1)
		go func() { defer wg.Done(); endpoints.run(serveCtx, n, e.log) }()
	}

	st := n.Status()
	attrs := []any{"instance", instance, "name", st.Name, "listen_port", st.ListenPort, "control", cfg.controlPath, "book", src.shown, "serial", book.Serial}
	if src.first.Signer != "" {
		attrs = append(attrs, "signer", src.first.Signer)
	}
	if src.first.FromCache {
		attrs = append(attrs, "from_cache", true)
	}
	for _, r := range relays {
		attrs = append(attrs, strings.TrimPrefix(r.spec.Flag, "--"), r.String())
	}
	attrs = append(attrs, svc.readyAttrs()...)
	e.log.Info("ready", attrs...)
	e.warnRulesNotEnforced(book)

	var runErr error
	updates := src.updates
loop:
	for {
		select {
		case <-ctx.Done():
			e.log.Info("shutting down")
			break loop
		case runErr = <-failed:
			break loop
		case u, ok := <-updates:
			if !ok {
				updates = nil // the source has stopped: ctx is ending
				continue
			}
			e.apply(ctx, n, u, cfg, src.shown, rep, svc.metrics)
		}
	}
	svc.setReady(false)
	stopSource()
	src.drain()
	stopRelays()
	wg.Wait()
	// The proxies and the DNS server use the node: stop them first.
	svc.close()
	n.Close()
	if endpoints != nil {
		endpoints.close()
	}
	ctl.Close()
	return runErr
}

// checkTarget makes sure a --forward target names a member of the book or
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
