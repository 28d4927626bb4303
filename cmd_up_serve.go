package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

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
