package netutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Limits bound what clients hold at once: connections of a listener, UDP
// associations, UDP sessions. A client is a source IP address (its port
// is not part of it: one host can open any number of ports). Zero means
// no limit.
type Limits struct {
	Total     int
	PerClient int
}

// Counter counts what clients hold against Limits. It is safe for
// concurrent use.
type Counter struct {
	lim Limits

	mu     sync.Mutex
	total  int
	counts map[netip.Addr]int
}

// NewCounter returns a Counter enforcing lim.
func NewCounter(lim Limits) *Counter {
	return &Counter{lim: lim, counts: make(map[netip.Addr]int)}
}

// Acquire takes one unit for client, or says which limit is reached.
// Every successful Acquire must be followed by one Release.
func (c *Counter) Acquire(client netip.Addr) error {
	client = client.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lim.Total > 0 && c.total >= c.lim.Total {
		return fmt.Errorf("limit of %d in total reached", c.lim.Total)
	}
	if c.lim.PerClient > 0 && c.counts[client] >= c.lim.PerClient {
		return fmt.Errorf("limit of %d per client reached", c.lim.PerClient)
	}
	c.total++
	c.counts[client]++
	return nil
}

// Release gives back one unit taken by Acquire(client).
func (c *Counter) Release(client netip.Addr) {
	client = client.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.counts[client]--; c.counts[client] <= 0 {
		delete(c.counts, client)
	}
}

// Total returns the units held, for tests and status.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// ClientIP is the source IP of a remote address; the zero Addr (one
// shared client) when it is unknown.
func ClientIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

// LimitListener wraps ln so that it holds at most lim connections. A
// connection over a limit is accepted and closed at once, so its client
// learns at once instead of waiting in the kernel's backlog, and the
// refusal is logged through refused. A connection counts until it is
// closed.
func LimitListener(ln net.Listener, lim Limits, refused *RateLog) net.Listener {
	return &limitListener{Listener: ln, count: NewCounter(lim), refused: refused}
}

type limitListener struct {
	net.Listener
	count   *Counter
	refused *RateLog
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := ClientIP(c.RemoteAddr())
		if err := l.count.Acquire(ip); err != nil {
			l.refused.Log("connection refused", "client", AddrString(c.RemoteAddr()), "reason", err.Error())
			c.Close()
			continue
		}
		return &limitConn{Conn: c, release: func() { l.count.Release(ip) }}, nil
	}
}

// limitConn gives its unit back on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes a half-close on, for Join.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

var errNoHalfClose = errors.New("connection cannot half-close")

// RateLog logs one kind of event, such as refusals, at most once per
// interval: a flood of refusals costs one line per interval, which counts
// the events it stood for. A nil *RateLog discards everything.
type RateLog struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time
	level slog.Level

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// DefaultLogInterval is the interval of a RateLog made with every 0.
const DefaultLogInterval = 10 * time.Second

// NewRateLog returns a RateLog writing warnings to log (nil discards) at
// most once per every (0: DefaultLogInterval).
func NewRateLog(log *slog.Logger, every time.Duration) *RateLog {
	if every <= 0 {
		every = DefaultLogInterval
	}
	return &RateLog{log: OrDiscard(log), every: every, now: time.Now, level: slog.LevelWarn}
}

// NewRateLogLevel is NewRateLog writing at level instead of as warnings.
func NewRateLogLevel(log *slog.Logger, every time.Duration, level slog.Level) *RateLog {
	r := NewRateLog(log, every)
	r.level = level
	return r
}

// Log logs msg with attrs as a warning (or at the RateLog's level), unless one was logged within the
// interval; the next line logged says how many were left out.
func (r *RateLog) Log(msg string, attrs ...any) {
	if r == nil {
		return
	}
	r.mu.Lock()
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.last = now
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, "more_not_logged", n, "since", r.every.String()+" ago")
	}
	r.log.Log(context.Background(), r.level, msg, attrs...)
}
