package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/node"
)

// Rejection describes the last book version a node refused: invalid,
// badly signed, stale, or not applicable live. The node keeps running its
// previous book.
type Rejection struct {
	Time time.Time `json:"time"`
	// Error is the reason, one problem per line (FILE:LINE: message).
	Error string `json:"error"`
}

// Report is what the status endpoint serves: the node's Status plus facts
// that only the program around the node knows. Its JSON is node.Status's
// with extra fields, so a client that decodes a node.Status still works.
type Report struct {
	node.Status
	// LastRejection is set while the latest book version received was
	// refused; nil once a good book has been applied since.
	LastRejection *Rejection `json:"last_rejection,omitempty"`
}

// ReportSource is what ServeReport reports on.
type ReportSource interface {
	Report() Report
}

// ServeReport is Serve for a source that reports more than node.Status.
// The socket, its directory checks and Close behave exactly as Serve's.
func ServeReport(ctx context.Context, path string, src ReportSource) (*Server, error) {
	if src == nil {
		return nil, errors.New("nil report source")
	}
	return serveJSON(ctx, path, func() any { return src.Report() })
}

// Report fetches the node's full report, including the fields Status
// leaves out.
func (c *Client) Report(ctx context.Context) (Report, error) {
	var r Report
	err := c.getStatus(ctx, &r)
	return r, err
}

// WriteReportTable is WriteTable followed by a line about a refused book,
// e.g. "book: last update REJECTED 12s ago: book.toml:7: ...", with any
// further problems indented below it.
func WriteReportTable(w io.Writer, r Report, now time.Time) error {
	if err := WriteTable(w, r.Status, now); err != nil {
		return err
	}
	if r.LastRejection == nil {
		return nil
	}
	lines := strings.Split(strings.TrimRight(r.LastRejection.Error, "\n"), "\n")
	age := strings.TrimSuffix(HandshakeAge(r.LastRejection.Time, now), " ago")
	_, err := fmt.Fprintf(w, "book: last update REJECTED %s ago, running serial %d: %s\n", age, r.BookSerial, lines[0])
	for _, l := range lines[1:] {
		if err != nil {
			break
		}
		_, err = fmt.Fprintf(w, "  %s\n", l)
	}
	return err
}
