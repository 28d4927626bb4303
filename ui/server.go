// Package ui serves the web page of `wgmesh ui`: the members of a peer
// book, a running node's live view of them, and forms to add, change and
// remove members, with the JSON API behind them.
//
// Everything the page needs is embedded in the binary (no build step, no
// CDN), and the page runs under a strict Content-Security-Policy: no
// inline script or style, nothing loaded from elsewhere. Every request
// that changes the book carries the CSRF token of GET /api/csrf in the
// X-CSRF-Token header (403 without). With Server.Auth every request needs
// HTTP Basic credentials (401 without); without it the server answers only
// requests addressed to a loopback host, so that a web site cannot reach
// it by pointing its own name at 127.0.0.1 (DNS rebinding).
//
// Changes go through a Store (FileStore: the code of `wgmesh book add`,
// `remove` and `set`). A member added without a public key gets a key pair
// made by the server: its private key is in the answer of that one POST,
// inside the member's wg-quick config and its QR code, and nowhere else:
// it is not stored, not logged and never shown again.
//
// # Usage
//
//	srv := &ui.Server{
//		Store:  &ui.FileStore{Path: "book.toml", Signer: signer},
//		Status: control.NewClient("/run/wgmesh/wgmesh.sock"), // optional
//		Logger: logger,
//	}
//	ln, _ := net.Listen("tcp", "127.0.0.1:0")
//	http.Serve(ln, srv)
package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every response: the page's own
// script and style only, pictures from itself or data: URLs (the QR code),
// requests to itself only, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// CSRFHeader carries the token of GET /api/csrf on state-changing requests.
const CSRFHeader = "X-CSRF-Token"

// maxBody bounds a request body.
const maxBody = 64 << 10

// statusTimeout bounds one question to the node's control socket.
const statusTimeout = 3 * time.Second

// StatusSource is a running node's view; *control.Client is one.
type StatusSource interface {
	Report(ctx context.Context) (control.Report, error)
}

// Server is the page and its API. Set the fields before the first request;
// they are not changed after.
type Server struct {
	// Store holds the book (required).
	Store Store
	// Title names the book on the page, e.g. its path. "" : "peer book".
	Title string
	// Status, if not nil, is the node whose live view the page shows.
	Status StatusSource
	// Views, if not nil, are the nodes' published views: the page shows
	// the mesh matrix (GET /api/matrix).
	Views ViewSource
	// Auth, if not nil, requires HTTP Basic credentials on every request.
	// nil: no credentials, and only requests to a loopback host are
	// answered; suits a loopback listener only.
	Auth *proxy.Credentials
	// Logger receives changes of the book at info level and failures at
	// warn; failed authentications at most once per 10 s. Secrets are never
	// logged. nil: discard.
	Logger *slog.Logger

	once       sync.Once
	csrf       string
	mux        *http.ServeMux
	page       *template.Template
	authFailed *netutil.RateLog
}

func (s *Server) init() {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	s.csrf = base64.RawURLEncoding.EncodeToString(b[:])
	s.page = template.Must(template.New("index.html").Funcs(template.FuncMap{
		"addrs":    func(as []netip.Addr) string { return joinStrings(as) },
		"prefixes": func(ps []netip.Prefix) string { return joinStrings(ps) },
		"strs":     func(ss []string) string { return strings.Join(ss, ", ") },
	}).ParseFS(static, "static/index.html"))
	s.authFailed = netutil.NewRateLog(s.log(), 0)
	sub, _ := fs.Sub(static, "static")
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.servePage)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(sub)))
	m.HandleFunc("GET /api/csrf", s.serveCSRF)
	m.HandleFunc("GET /api/members", s.listMembers)
	m.HandleFunc("POST /api/members", s.addMember)
	m.HandleFunc("PATCH /api/members/{name}", s.setMember)
	m.HandleFunc("DELETE /api/members/{name}", s.removeMember)
	m.HandleFunc("GET /api/status", s.serveStatus)
	m.HandleFunc("GET /api/matrix", s.serveMatrix)
	s.mux = m
}

func (s *Server) log() *slog.Logger { return netutil.OrDiscard(s.Logger) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.once.Do(s.init)
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// The answer that holds a new member's private key must not linger in
	// a cache; nothing here is worth caching anyway.
	h.Set("Cache-Control", "no-store")
	if s.Store == nil {
		writeError(w, http.StatusInternalServerError, errors.New("ui: no book store configured"))
		return
	}
	if s.Auth == nil && !loopbackHost(r.Host) {
		writeError(w, http.StatusForbidden, fmt.Errorf("host %q refused: without credentials this page answers only on a loopback address (127.0.0.1, ::1, localhost)", r.Host))
		return
	}
	if s.Auth != nil {
		user, pass, ok := r.BasicAuth()
		if !ok || !s.Auth.Valid(user, pass) {
			if ok {
				s.authFailed.Log("ui authentication failed", "client", r.RemoteAddr, "user", user)
			}
			h.Set("WWW-Authenticate", `Basic realm="wgmesh ui", charset="UTF-8"`)
			writeError(w, http.StatusUnauthorized, errors.New("authentication required"))
			return
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	default:
		if err := s.checkCSRF(r); err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// checkCSRF accepts a state-changing request only with the server's token
// and, when the browser says where it comes from, from this origin.
func (s *Server) checkCSRF(r *http.Request) error {
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		return fmt.Errorf("missing CSRF token: send the token of GET /api/csrf in the %s header", CSRFHeader)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		return errors.New("wrong CSRF token: fetch the current one from GET /api/csrf (it changes when the server restarts)")
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %s)", site)
	}
	return nil
}

// loopbackHost reports whether the Host header names this machine by a
// loopback address or "localhost".
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func (s *Server) serveCSRF(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"token": s.csrf, "header": CSRFHeader})
}

// Member is a member as the API shows it: the book's facts, no secret.
type Member struct {
	Name       string         `json:"name"`
	PublicKey  string         `json:"public_key"`
	Addresses  []netip.Addr   `json:"addresses"`
	Endpoint   string         `json:"endpoint,omitempty"`
	ListenPort uint16         `json:"listen_port,omitempty"`
	Subnets    []netip.Prefix `json:"subnets"`
	Groups     []string       `json:"groups"`
	Registry   bool           `json:"registry,omitempty"`
	Relay      bool           `json:"relay,omitempty"`
}

func memberOf(p *peerbook.Peer) Member {
	m := Member{
		Name:       p.Name,
		PublicKey:  p.PublicKey.String(),
		Addresses:  p.Addresses,
		ListenPort: p.ListenPort,
		Subnets:    p.Subnets,
		Groups:     p.Groups,
		Registry:   p.Registry,
		Relay:      p.Relay,
	}
	if !p.Endpoint.IsZero() {
		m.Endpoint = p.Endpoint.String()
	}
	if m.Addresses == nil {
		m.Addresses = []netip.Addr{}
	}
	if m.Subnets == nil {
		m.Subnets = []netip.Prefix{}
	}
	if m.Groups == nil {
		m.Groups = []string{}
	}
	return m
}

// Members is the answer of GET /api/members.
type Members struct {
	Serial   uint64         `json:"serial"`
	Domain   string         `json:"domain"`
	Networks []netip.Prefix `json:"networks"`
	Members  []Member       `json:"members"`
}

func membersOf(b *peerbook.Book) Members {
	ms := Members{Serial: b.Serial, Domain: b.Mesh.Domain, Networks: b.Mesh.Networks, Members: make([]Member, len(b.Peers))}
	for i := range b.Peers {
		ms.Members[i] = memberOf(&b.Peers[i])
	}
	return ms
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	b, err := s.Store.Load(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, membersOf(b))
}

// AddRequest is the body of POST /api/members.
type AddRequest struct {
	Name string `json:"name"`
	// PublicKey is the member's key; "" has the server make a key pair and
	// answer with the config and QR code that hold its private key.
	PublicKey string   `json:"public_key,omitempty"`
	Endpoint  string   `json:"endpoint,omitempty"`
	Subnets   []string `json:"subnets,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Registry  bool     `json:"registry,omitempty"`
	Relay     bool     `json:"relay,omitempty"`
}

// AddResponse is the answer of POST /api/members.
type AddResponse struct {
	Member Member `json:"member"`
	Serial uint64 `json:"serial"`
	// Config is the member's wg-quick configuration with its private key
	// and QRPNG its QR code (a PNG picture), set only when the server made
	// the key pair: this answer is the one time they are shown.
	Config string `json:"config,omitempty"`
	QRPNG  []byte `json:"qr_png,omitempty"`
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) {
	var req AddRequest
	if !readJSON(w, r, &req) {
		return
	}
	m := peerbook.Member{Name: strings.TrimSpace(req.Name), Groups: cleanList(req.Groups), Registry: req.Registry, Relay: req.Relay}
	var err error
	if m.Endpoint, err = parseEndpoint(req.Endpoint); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if m.Subnets, err = parsePrefixes(req.Subnets); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var priv *peerbook.PrivateKey
	if k := strings.TrimSpace(req.PublicKey); k != "" {
		if m.PublicKey, err = peerbook.ParseKey(k); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("public key: %w", err))
			return
		}
	} else {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		priv = &k
		m.PublicKey = k.Public()
	}
	nb, err := s.Store.Update(r.Context(), inputChange(func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.AddMember(b, m) }))
	if err != nil {
		s.writeChangeError(w, err)
		return
	}
	p, _ := nb.PeerByName(m.Name)
	keyOrigin := "given"
	if priv != nil {
		keyOrigin = "made by the server, shown once"
	}
	s.log().Info("ui: member added", "member", p.Name, "addresses", joinStrings(p.Addresses), "serial", nb.Serial, "key", keyOrigin)
	resp := AddResponse{Member: memberOf(p), Serial: nb.Serial}
	if priv != nil {
		conf, err := peerbook.ExportWGQuick(nb, p.Name, priv)
		if err == nil {
			resp.Config = string(conf)
			resp.QRPNG, err = qrPNG(conf)
		}
		if err != nil {
			// The member is in the book, but its secret cannot be handed
			// over: say so rather than leave a member no one can be.
			writeError(w, http.StatusInternalServerError, fmt.Errorf("member %s added, but its config cannot be shown (%v); give it a new key pair with: wgmesh book set --name %s --public-key KEY", p.Name, err, p.Name))
			return
		}
	}
	writeJSON(w, http.StatusCreated, resp)
}

// SetRequest is the body of PATCH /api/members/NAME: the settings to change;
// absent (null) fields stay as they are. An empty endpoint removes it, an
// empty list empties it.
type SetRequest struct {
	Endpoint *string   `json:"endpoint"`
	Subnets  *[]string `json:"subnets"`
	Groups   *[]string `json:"groups"`
}

func (s *Server) setMember(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req SetRequest
	if !readJSON(w, r, &req) {
		return
	}
	var ch peerbook.Change
	if req.Endpoint != nil {
		ep, err := parseEndpoint(*req.Endpoint)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		ch.Endpoint = &ep
	}
	if req.Subnets != nil {
		ps, err := parsePrefixes(*req.Subnets)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if ps == nil {
			ps = []netip.Prefix{}
		}
		ch.Subnets = &ps
	}
	if req.Groups != nil {
		gs := cleanList(*req.Groups)
		if gs == nil {
			gs = []string{}
		}
		ch.Groups = &gs
	}
	if ch.Endpoint == nil && ch.Subnets == nil && ch.Groups == nil {
		writeError(w, http.StatusBadRequest, errors.New("nothing to change: give endpoint, subnets or groups"))
		return
	}
	nb, err := s.Store.Update(r.Context(), inputChange(func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.SetMember(b, name, ch) }))
	if err != nil {
		s.writeChangeError(w, err)
		return
	}
	p, _ := nb.PeerByName(name)
	s.log().Info("ui: member changed", "member", p.Name, "serial", nb.Serial)
	writeJSON(w, http.StatusOK, struct {
		Member Member `json:"member"`
		Serial uint64 `json:"serial"`
	}{memberOf(p), nb.Serial})
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	nb, err := s.Store.Update(r.Context(), inputChange(func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.RemoveMember(b, name) }))
	if err != nil {
		s.writeChangeError(w, err)
		return
	}
	s.log().Info("ui: member removed", "member", name, "serial", nb.Serial)
	writeJSON(w, http.StatusOK, map[string]any{"removed": name, "serial": nb.Serial})
}

// inputError marks a change refused for what was asked (a taken name, a
// value the validator refuses), as opposed to a store that failed.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

func inputChange(f func(*peerbook.Book) (*peerbook.Book, error)) func(*peerbook.Book) (*peerbook.Book, error) {
	return func(b *peerbook.Book) (*peerbook.Book, error) {
		nb, err := f(b)
		if err != nil {
			return nil, &inputError{err}
		}
		return nb, nil
	}
}

func (s *Server) writeChangeError(w http.ResponseWriter, err error) {
	var ie *inputError
	switch {
	case errors.Is(err, peerbook.ErrNoMember):
		writeError(w, http.StatusNotFound, err)
	case errors.As(err, &ie):
		writeError(w, http.StatusUnprocessableEntity, err)
	case errors.Is(err, bookedit.ErrNeedsSigner):
		writeError(w, http.StatusConflict, fmt.Errorf("%w: the server needs the signing key to change it", err))
	default:
		s.log().Warn("ui: book not changed", "err", err)
		writeError(w, http.StatusInternalServerError, err)
	}
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if s.Status == nil {
		writeError(w, http.StatusNotFound, errors.New("no node to ask: the page was started without a control socket"))
		return
	}
	rep, err := s.report(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) report(ctx context.Context) (control.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return s.Status.Report(ctx)
}

// pageData is what index.html renders.
type pageData struct {
	Title    string
	Book     *peerbook.Book
	BookErr  error
	Live     bool
	Matrix   bool
	Domain   string
	Networks string
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	d := pageData{Title: s.Title, Live: s.Status != nil, Matrix: s.Views != nil}
	if d.Title == "" {
		d.Title = "peer book"
	}
	d.Book, d.BookErr = s.Store.Load(r.Context())
	if d.Book != nil {
		d.Domain = d.Book.Mesh.Domain
		d.Networks = joinStrings(d.Book.Mesh.Networks)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.page.Execute(w, d); err != nil {
		s.log().Warn("ui: page", "err", err)
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("want a JSON body (Content-Type: application/json), got %q", ct))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, errors.New("request body: more than one JSON value"))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func parseEndpoint(s string) (peerbook.Endpoint, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return peerbook.Endpoint{}, nil
	}
	ep, err := peerbook.ParseEndpoint(s)
	if err != nil {
		return ep, fmt.Errorf("endpoint: %w", err)
	}
	return ep, nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range cleanList(ss) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("subnet %q is not a network like 192.168.1.0/24", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// cleanList trims the items of a list typed in a form and drops empty ones.
func cleanList(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func joinStrings[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}
