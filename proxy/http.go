package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// HTTP is an HTTP proxy into the mesh, to be served by the caller's
// http.Server. It handles CONNECT tunnels (any TCP protocol, e.g. HTTPS or
// `curl -p`) and absolute-form requests (GET http://beta/path), which it
// forwards over HTTP/1.1 with hop-by-hop headers removed. Other requests
// get 400. Set the fields before serving; they must not change afterwards.
type HTTP struct {
	// Dialer opens TCP connections into the mesh. Required.
	Dialer Dialer
	// Book returns the current peer book. Required.
	Book Book
	// Auth, when set, requires Proxy-Authorization with Basic credentials of
	// one of these users; requests without them get 407. Nil allows
	// everyone, which suits a loopback listener only (see CheckListenFlag).
	Auth *Credentials
	// Allow lists destinations allowed beyond members' addresses and
	// subnets. Empty allows only the mesh.
	Allow []netip.Prefix
	// Exit, when set, reports whether the node sends traffic outside the
	// mesh through an exit member now (node.Node.ExitActive). While it
	// does, addresses outside the mesh are allowed too, and names outside
	// the mesh's namespace (with a dot, not under the mesh domain) are
	// resolved with Resolver; member names and names under the mesh
	// domain never leave the book. Nil: only the mesh and Allow.
	Exit func() bool
	// Resolver resolves those names. Nil: net.DefaultResolver, this
	// host's resolver; the query leaves from this host, not through the
	// exit member.
	Resolver Resolver
	// Logger receives request logs at debug level and failures at warn;
	// failed authentications at most once per 10 s. Nil discards them.
	// Credentials are never logged.
	Logger *slog.Logger

	once       sync.Once
	authFailed *netutil.RateLog
	forwarder  *httputil.ReverseProxy
	transport  *http.Transport
	t          tracker
}

func (h *HTTP) route() route { return routeOf(h.Book, h.Allow, h.Exit, h.Resolver) }

// proxyRealm is the Basic authentication realm offered in 407 replies.
const proxyRealm = "wgmesh"

// ServeHTTP implements http.Handler.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.init)
	log := h.log().With("client", r.RemoteAddr, "method", r.Method, "host", r.Host)
	if h.Dialer == nil || h.Book == nil {
		http.Error(w, "wgmesh proxy: not configured", http.StatusInternalServerError)
		return
	}
	if h.t.isClosed() {
		http.Error(w, "wgmesh proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	if h.Auth != nil {
		user, ok := h.authenticate(r)
		if !ok {
			w.Header().Set("Proxy-Authenticate", `Basic realm="`+proxyRealm+`"`)
			http.Error(w, "wgmesh proxy: authentication required", http.StatusProxyAuthRequired)
			if user != "" {
				// Anyone can try passwords: a line per 10 s at most.
				h.authFailed.Log("http proxy authentication failed", "client", r.RemoteAddr, "user", user)
			}
			return
		}
		log = log.With("user", user)
	}
	switch {
	case r.Method == http.MethodConnect:
		h.connect(w, r, log)
	case r.URL.IsAbs() && r.URL.Scheme == "http" && r.URL.Host != "":
		h.forward(w, r, log)
	case r.URL.IsAbs():
		http.Error(w, fmt.Sprintf("wgmesh proxy: scheme %q not supported; use CONNECT for TLS", r.URL.Scheme), http.StatusBadRequest)
	default:
		http.Error(w, "wgmesh proxy: this is a proxy; send absolute-form requests (GET http://member/path) or CONNECT", http.StatusBadRequest)
	}
}

// Close closes every CONNECT tunnel and every connection into the mesh,
// fails requests in flight and waits for the tunnels to end. Later requests
// get 503. Shut down the http.Server serving h as well. The first call
// returns nil; later calls return an error wrapping net.ErrClosed.
func (h *HTTP) Close() error {
	h.once.Do(h.init)
	if !h.t.close() {
		return fmt.Errorf("http proxy: close: %w", net.ErrClosed)
	}
	h.transport.CloseIdleConnections()
	return nil
}

func (h *HTTP) log() *slog.Logger { return netutil.OrDiscard(h.Logger) }

func (h *HTTP) init() {
	h.authFailed = netutil.NewRateLog(h.log(), 0)
	h.transport = &http.Transport{
		DialContext:           h.dialMesh,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	h.forwarder = &httputil.ReverseProxy{
		// The request is already absolute; ReverseProxy removes hop-by-hop
		// headers (Connection, Proxy-Authorization, ...) and, with Rewrite,
		// adds no X-Forwarded-* headers.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: h.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.fail(w, h.log().With("client", r.RemoteAddr, "url", r.URL.Redacted()), err)
		},
	}
}

// authenticate checks Proxy-Authorization. It returns the user name it
// found, if any, and whether the credentials are valid.
func (h *HTTP) authenticate(r *http.Request) (string, bool) {
	hdr := r.Header.Values("Proxy-Authorization")
	if len(hdr) == 0 {
		return "", false
	}
	// Parse with the standard library's Basic parser.
	fake := http.Request{Header: http.Header{"Authorization": hdr}}
	user, pass, ok := fake.BasicAuth()
	if !ok {
		return "", false
	}
	return user, h.Auth.Valid(user, pass)
}

// dialMesh is the Transport's DialContext: it resolves and checks addr
// again (a kept-alive connection is reused only for the same host), dials
// into the mesh and tracks the connection so Close can end it.
func (h *HTTP) dialMesh(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := splitHostPort(addr, 0)
	if err != nil {
		return nil, err
	}
	dst, err := h.route().destination(ctx, host, port)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	stop := context.AfterFunc(h.t.context(), cancel)
	defer stop()
	c, err := h.Dialer.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: &h.t}
	if !h.t.track(tc) {
		c.Close()
		return nil, fmt.Errorf("dial %s: %w", dst, net.ErrClosed)
	}
	return tc, nil
}

func (h *HTTP) forward(w http.ResponseWriter, r *http.Request, log *slog.Logger) {
	log = log.With("url", r.URL.Redacted())
	// Check before handing over, so a refused destination is a clean 403
	// and never reaches the Transport.
	if _, err := h.route().destination(r.Context(), r.URL.Hostname(), 80); err != nil {
		h.fail(w, log, err)
		return
	}
	log.Debug("http proxy request")
	h.forwarder.ServeHTTP(w, r)
}

func (h *HTTP) connect(w http.ResponseWriter, r *http.Request, log *slog.Logger) {
	host, port, err := splitHostPort(r.Host, 0)
	if err != nil {
		http.Error(w, "wgmesh proxy: CONNECT needs HOST:PORT", http.StatusBadRequest)
		return
	}
	dst, err := h.route().destination(r.Context(), host, port)
	if err != nil {
		h.fail(w, log, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "wgmesh proxy: CONNECT needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dialTimeout)
	stop := context.AfterFunc(h.t.context(), cancel)
	up, err := h.Dialer.Dial(ctx, "tcp", dst.String())
	stop()
	cancel()
	if err != nil {
		h.fail(w, log.With("target", dst.String()), err)
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		log.Warn("http proxy: hijack", "err", err)
		return
	}
	if !h.t.track(up) {
		up.Close()
		client.Close()
		return
	}
	// The tunnel runs in a goroutine of its own that Close waits for; the
	// http.Server forgets hijacked connections.
	h.t.goTracked(client, func() {
		defer h.t.release(up)
		client.SetDeadline(time.Time{})
		if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			return
		}
		// The client may have sent its first bytes (a TLS ClientHello)
		// right behind the CONNECT request.
		if n := buf.Reader.Buffered(); n > 0 {
			b, _ := buf.Reader.Peek(n)
			if _, err := up.Write(b); err != nil {
				return
			}
		}
		start := time.Now()
		log := log.With("target", dst.String())
		log.Debug("http proxy tunnel")
		sent, received, err := netutil.Join(client, up)
		log.Debug("http proxy tunnel closed", "sent", sent, "received", received,
			"duration", time.Since(start).Round(time.Millisecond), "err", err)
	})
}

// fail answers a refused or failed request: 403 for destinations outside
// the rules, 502 for members that do not exist or cannot be reached.
func (h *HTTP) fail(w http.ResponseWriter, log *slog.Logger, err error) {
	var ref *refusal
	switch {
	case errors.As(err, &ref) && !ref.notMember:
		log.Warn("http proxy refused", "err", err)
		http.Error(w, "wgmesh proxy: forbidden: "+err.Error(), http.StatusForbidden)
	case errors.As(err, &ref):
		log.Warn("http proxy refused", "err", err)
		http.Error(w, "wgmesh proxy: "+err.Error(), http.StatusBadGateway)
	case errors.Is(err, context.Canceled):
		// The client went away.
	default:
		status := http.StatusBadGateway
		if _, host := errIsUnreachable(err); host {
			status = http.StatusGatewayTimeout
		}
		log.Warn("http proxy upstream failed", "err", err)
		http.Error(w, "wgmesh proxy: "+err.Error(), status)
	}
}

// trackedConn forgets itself in the tracker when the Transport closes it.
type trackedConn struct {
	net.Conn
	t    *tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.closers, c)
		c.t.mu.Unlock()
	})
	return err
}
