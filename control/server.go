// Package control is the local control socket of a running wgmesh node: a
// small HTTP API served on a unix socket that only the node's user can
// reach. The status command of the wgmesh CLI reads it.
//
// # Usage
//
//	srv, err := control.Serve(ctx, "/run/wgmesh/wgmesh.sock", n) // n is a *node.Node
//	defer srv.Close()
//
//	st, err := control.NewClient("/run/wgmesh/wgmesh.sock").Status(ctx)
//
// The API serves public facts only (node.Status): names, public keys,
// addresses, endpoints and counters, never a private key.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/node"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// StatusPath is the HTTP path of the status endpoint.
const StatusPath = "/v1/status"

// StatusSource is what the server reports on; *node.Node implements it.
type StatusSource interface {
	Status() node.Status
}

// Server serves the control API on a unix socket. Close stops it and
// removes the socket.
type Server struct {
	path string
	ln   net.Listener
	http *http.Server
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Serve creates the socket at path and serves the control API on it until
// ctx is cancelled or Close is called.
//
// The socket's directory is created with mode 0700 if missing. An existing
// directory is refused when group or others may write to it or when another
// user owns it, since anyone who can write there could replace the socket.
// The socket itself gets mode 0600. A stale socket left by a node that died
// is replaced; a socket on which another node still answers is not.
func Serve(ctx context.Context, path string, src StatusSource) (*Server, error) {
	if src == nil {
		return nil, errors.New("nil status source")
	}
	return serveJSON(ctx, path, func() any { return src.Status() })
}

// serveJSON runs the control API on path, answering the status endpoint with
// the JSON of what report returns.
func serveJSON(ctx context.Context, path string, report func() any) (*Server, error) {
	if path == "" {
		return nil, errors.New("empty socket path")
	}
	if err := Check(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The directory is private, so nobody else can reach the socket in the
	// moment between bind and chmod; the mode keeps it private if the
	// directory is later opened up.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		// Compact: at 10,000 members indenting took three times as long
		// as encoding (25 against 7 ms), on every poll of the web page;
		// `wgmesh status --json` indents for people.
		json.NewEncoder(w).Encode(report())
	})
	s := &Server{
		path: path,
		ln:   ln,
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		s.http.Serve(ln)
	}()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Close stops serving, waits for the server to finish and removes the
// socket. Later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
		<-s.done
		// The unix listener unlinks its socket on close; this catches
		// the case where it could not.
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.closeErr = fmt.Errorf("remove socket: %w", err)
		}
	})
	return s.closeErr
}

// Check prepares path for Serve without binding it: it creates the
// directory, applies the directory checks and removes a stale socket. A
// program that starts slow work before serving calls it first to fail
// early, for instance when another node already serves on path.
func Check(path string) error {
	if path == "" {
		return errors.New("empty socket path")
	}
	if err := prepareDir(filepath.Dir(path)); err != nil {
		return err
	}
	return removeStale(path)
}

// prepareDir creates the socket's directory or checks that only this
// user can change it: whoever can write it can replace the socket.
func prepareDir(dir string) error {
	return fileutil.PrivateDir(dir, "socket directory")
}

// removeStale removes a socket at path that nothing answers on any more.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another wgmesh node is already serving on %s; stop it or choose another control socket path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
