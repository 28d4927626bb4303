package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"syscall"

	"github.com/wgmesh/wgmesh/node"
)

// ErrNoNode is wrapped by Client errors when nothing serves the socket.
var ErrNoNode = errors.New("no wgmesh node is serving this control socket")

// Client talks to a node's control socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the socket at path. It connects lazily.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{path: path, http: &http.Client{Transport: tr}}
}

// Status fetches the node's status.
func (c *Client) Status(ctx context.Context) (node.Status, error) {
	var st node.Status
	err := c.getStatus(ctx, &st)
	return st, err
}

// getStatus fetches the status document into v: node.Status, or a Report
// for the fields a report adds.
func (c *Client) getStatus(ctx context.Context, v any) error {
	// The host part is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wgmesh"+StatusPath, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%s: %w", c.path, ErrNoNode)
		}
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("control socket %s: %s: %s", c.path, resp.Status, b)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("control socket %s: decode status: %w", c.path, err)
	}
	return nil
}
