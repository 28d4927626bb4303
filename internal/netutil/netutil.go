// Package netutil holds the small helpers that the relays and proxies
// share: telling a passing accept error from a fatal one, waiting with a
// context, and formatting addresses for logs.
package netutil

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Temporary reports whether an accept or read error may go away by itself,
// such as running out of file descriptors.
func Temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECONNRESET)
}

// Sleep waits for d and reports false if ctx was cancelled first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// OrDiscard returns log, or a logger that discards everything for nil.
func OrDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// AddrString formats an address that may be nil: some conns lose their
// remote address once the peer is gone.
func AddrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}
