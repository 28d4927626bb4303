package ui

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/etcdbook"
)

// ViewSource is where the nodes' views of the mesh are published: the
// views/ records of an etcd book (EtcdStore is one).
type ViewSource interface {
	Views(ctx context.Context) (map[string]etcdbook.View, error)
}

// Matrix is GET /api/matrix: every member of the book by every member,
// each row what its member reports of the others.
type Matrix struct {
	// Members are the book's members in book order: the rows and the
	// columns.
	Members []string    `json:"members"`
	Rows    []MatrixRow `json:"rows"`
}

// MatrixRow is one member's report.
type MatrixRow struct {
	Name string `json:"name"`
	// Reported is when the member made its view; zero: it published none
	// (not running, or its lease expired).
	Reported time.Time    `json:"reported,omitzero"`
	Cells    []MatrixCell `json:"cells"`
}

// MatrixCell is what the row's member reports of the column's.
type MatrixCell struct {
	Name string `json:"name"`
	// Path is "direct", "relayed via NAME", "no path" or "idle" as the
	// row's member reports it, "self" on the diagonal, "" when the row's
	// member reported nothing of it.
	Path          string    `json:"path"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
}

func (s *Server) serveMatrix(w http.ResponseWriter, r *http.Request) {
	if s.Views == nil {
		writeError(w, http.StatusNotFound, errors.New("no mesh matrix: the nodes publish their views only into a book in etcd (wgmesh ui --book etcd://...)"))
		return
	}
	book, err := s.Store.Load(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	views, err := s.Views.Views(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	m := Matrix{Members: make([]string, 0, len(book.Peers)), Rows: make([]MatrixRow, 0, len(book.Peers))}
	for i := range book.Peers {
		m.Members = append(m.Members, book.Peers[i].Name)
	}
	for _, from := range m.Members {
		v, ok := views[strings.ToLower(from)]
		seen := map[string]etcdbook.PeerView{}
		for _, p := range v.Peers {
			seen[strings.ToLower(p.Name)] = p
		}
		row := MatrixRow{Name: from, Cells: make([]MatrixCell, 0, len(m.Members))}
		if ok {
			row.Reported = v.Time
		}
		for _, to := range m.Members {
			c := MatrixCell{Name: to}
			if strings.EqualFold(from, to) {
				c.Path = "self"
			} else if p, ok := seen[strings.ToLower(to)]; ok {
				c.Path, c.LastHandshake = p.Path, p.LastHandshake
			}
			row.Cells = append(row.Cells, c)
		}
		m.Rows = append(m.Rows, row)
	}
	writeJSON(w, http.StatusOK, m)
}
