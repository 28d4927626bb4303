package control

import (
	"bytes"
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

// ReportJSON fetches the node's report as the JSON document it sent
// (compact), checked to be a JSON object, for a caller that only prints
// it: at 10,000 members decoding and encoding it again costs more than the
// node's answer.
func (c *Client) ReportJSON(ctx context.Context) ([]byte, error) {
	var raw []byte
	err := c.get(ctx, func(body io.Reader) (err error) {
		raw, err = io.ReadAll(io.LimitReader(body, 64<<20))
		raw = bytes.TrimSpace(raw)
		if err == nil && (!bytes.HasPrefix(raw, []byte("{")) || !bytes.HasSuffix(raw, []byte("}"))) {
			err = errors.New("the answer is not a JSON object")
		}
		return err
	})
	return raw, err
}

// getStatus fetches the status document into v: node.Status, a Report
// for the fields a report adds.
func (c *Client) getStatus(ctx context.Context, v any) error {
	return c.get(ctx, func(body io.Reader) error {
		return json.NewDecoder(io.LimitReader(body, 64<<20)).Decode(v)
	})
}

// get fetches the status document and hands its body to read.
func (c *Client) get(ctx context.Context, read func(io.Reader) error) error {
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
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("control socket %s: decode status: %w", c.path, err)
	}
	return nil
}
