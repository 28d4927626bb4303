package netutil

import (
	"net/http"
	"time"
)

// Timeouts of the HTTP servers wgmesh runs (--metrics, --http-proxy).
const (
	// HTTPReadHeaderTimeout closes a client that has not sent its request
	// headers by then.
	HTTPReadHeaderTimeout = 10 * time.Second
	// HTTPIdleTimeout closes a keep-alive connection without a request for
	// that long, authenticated or not.
	HTTPIdleTimeout = 60 * time.Second
)

// NewHTTPServer returns a server for h with wgmesh's timeouts; idle
// replaces HTTPIdleTimeout when not 0 (tests shorten it). Serve it on a
// LimitListener: the timeouts end idle clients, the limits bound the busy
// ones.
func NewHTTPServer(h http.Handler, idle time.Duration) *http.Server {
	if idle <= 0 {
		idle = HTTPIdleTimeout
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: HTTPReadHeaderTimeout, IdleTimeout: idle}
}
