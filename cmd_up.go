package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/daemon"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/forward"
	"github.com/wgmesh/wgmesh/node"
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
			&cli.StringFlag{Name: "exit-node", Usage: "send all traffic outside the mesh through member `NAME`, which must have exit = true in the book (--mode tun)"},
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
	exitNode    string

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
	cfg.ifname, cfg.masquerade, cfg.exitNode = c.String("interface"), c.Bool("masquerade"), c.String("exit-node")
	if cfg.exitNode != "" && cfg.mode != node.ModeTUN {
		return cfg, usagef("--exit-node needs --mode tun (netstack mode has no exit node yet)")
	}
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

func (e *env) up(c *cli.Context) error {
	cfg, instance, err := e.upSettings(c)
	if err != nil {
		return err
	}
	// SIGHUP re-reads the book. Caught from the start: its default action
	// would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	dcfg, err := e.daemonConfig(cfg, instance)
	if err != nil {
		return err
	}
	var endpoints *etcdEndpoints
	if cfg.bookEtcd {
		// Observed endpoints in etcd: members behind NAT find each other
		// there, with no registry member. Closed after the node (defers
		// run in reverse).
		if endpoints, err = startEtcdEndpoints(cfg); err != nil {
			return err
		}
		defer endpoints.close()
		dcfg.Node.EndpointDirectory = endpoints.dir
	}
	d, err := daemon.New(dcfg)
	if err != nil {
		return flagError(err)
	}
	defer d.Close()
	go func() {
		for {
			select {
			case <-d.Done():
				return
			case <-hup:
				d.Reload()
			}
		}
	}()
	ctx := c.Context
	if err := d.Start(ctx); err != nil {
		return flagError(err)
	}
	if endpoints != nil {
		// Publishing stops before the daemon closes.
		pctx, stop := context.WithCancel(ctx)
		published := make(chan struct{})
		go func() { defer close(published); endpoints.run(pctx, d.Node(), e.log) }()
		defer func() { stop(); <-published }()
	}
	select {
	case <-ctx.Done():
		e.log.Info("shutting down")
	case <-d.Done():
	}
	return flagError(d.Close())
}

// daemonConfig turns the checked command line into the daemon's Config,
// reading the files the flags name (credentials, signers, CA).
func (e *env) daemonConfig(cfg upConfig, instance string) (daemon.Config, error) {
	dcfg := daemon.Config{
		Book:        cfg.book,
		KeyFile:     cfg.keyPath,
		StateDir:    cfg.stateDir,
		Forwards:    cfg.forwards,
		Exposes:     cfg.exposes,
		ControlPath: cfg.controlPath,
		Metrics:     cfg.metrics,
		SOCKS:       cfg.socks,
		HTTPProxy:   cfg.httpProxy,
		DNS:         cfg.dns,
		ProxyAllow:  cfg.proxyAllow,
		Instance:    instance,
		Logger:      e.log,
		Node: node.Config{
			ListenPort:      cfg.listenPort,
			ResolveInterval: cfg.resolveInterval,
			Registry:        cfg.registry,
			RegistryZone:    cfg.registryZone,
			RegistryPort:    cfg.registryPort,
			Mode:            cfg.mode,
			InterfaceName:   cfg.ifname,
			Masquerade:      cfg.masquerade,
			ExitNode:        cfg.exitNode,
			StateDir:        cfg.stateDir,
		},
	}
	creds, resolver, err := loadServiceFiles(cfg)
	if err != nil {
		return dcfg, err
	}
	dcfg.ProxyAuth = creds
	if resolver != nil {
		dcfg.Node.Resolver = resolver
	}
	if err := bookSettings(cfg, &dcfg); err != nil {
		return dcfg, err
	}
	return dcfg, nil
}

// daemonFlags names the flag of each daemon.Config field that a
// daemon.ConfigError can name.
var daemonFlags = map[string]string{
	"Book":        "--book",
	"KeyFile":     "--key",
	"StateDir":    "--state-dir",
	"ControlPath": "--control",
	"Metrics":     "--metrics",
	"SOCKS":       "--socks",
	"HTTPProxy":   "--http-proxy",
	"DNS":         "--dns",
	"ProxyAuth":   "--socks-auth-file",
}

// flagError speaks of flags where the daemon speaks of its Config fields:
// "--metrics: cannot listen on ..." for a ConfigError of Metrics. Errors
// joined by errors.Join are mapped one by one.
func flagError(err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		mapped := make([]error, len(errs))
		for i, e := range errs {
			mapped[i] = flagError(e)
		}
		return errors.Join(mapped...)
	}
	var cerr *daemon.ConfigError
	if errors.As(err, &cerr) && err == error(cerr) {
		if flag, ok := daemonFlags[cerr.Field]; ok {
			return fmt.Errorf("%s: %w", flag, cerr.Err)
		}
	}
	return err
}
