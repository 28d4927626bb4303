package ui

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/proxy"
)

// fixture is a book of two members whose private keys the test knows, and
// a page serving it.
type fixture struct {
	t     *testing.T
	path  string
	privs []string // private keys of the book's members, base64
	srv   *Server
	ts    *httptest.Server
	logs  *testutil.Buffer
	seen  testutil.Buffer // every response body (requests may run at once)
}

func newFixture(t *testing.T, configure func(*Server)) *fixture {
	t.Helper()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "book.toml"), logs: &testutil.Buffer{}}
	for i, name := range []string{"a", "b"} {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		f.privs = append(f.privs, k.Encode())
		ed := bookedit.Edit{Path: f.path, Change: func(b *peerbook.Book) (*peerbook.Book, error) {
			m := peerbook.Member{Name: name, PublicKey: k.Public()}
			if i == 1 {
				m.Endpoint, _ = peerbook.ParseEndpoint("127.0.0.1:51999")
			}
			return peerbook.AddMember(b, m)
		}}
		if i == 0 {
			ed.New = &peerbook.Book{Format: peerbook.CurrentFormat, Mesh: peerbook.Mesh{
				Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42:42::/64")},
				ListenPort: 51820, MTU: 1420, PersistentKeepalive: 25}}
		}
		if _, err := bookedit.Apply(ed); err != nil {
			t.Fatal(err)
		}
	}
	f.srv = &Server{Store: &FileStore{Path: f.path}, Logger: slog.New(slog.NewTextHandler(f.logs, nil))}
	if configure != nil {
		configure(f.srv)
	}
	f.ts = httptest.NewServer(f.srv)
	t.Cleanup(f.ts.Close)
	return f
}

type request struct {
	method, path string
	body         any
	csrf         bool // send the server's token
	header       map[string]string
	user, pass   string
}

func (f *fixture) do(r request) (int, http.Header, []byte) {
	f.t.Helper()
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			f.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(r.method, f.ts.URL+r.path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.csrf {
		f.srv.once.Do(f.srv.init)
		req.Header.Set(CSRFHeader, f.srv.csrf)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if r.user != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	f.seen.Write(out)
	return resp.StatusCode, resp.Header, out
}

// want does r and checks its status code; it returns the body.
func (f *fixture) want(code int, r request) []byte {
	f.t.Helper()
	got, _, body := f.do(r)
	if got != code {
		f.t.Fatalf("%s %s: status %d, want %d; body %s", r.method, r.path, got, code, body)
	}
	return body
}

func (f *fixture) book() *peerbook.Book {
	f.t.Helper()
	b, err := bookedit.Load(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func errorOf(t *testing.T, body []byte) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("want a JSON error, got %s", body)
	}
	return e.Error
}

func TestAuth(t *testing.T) {
	creds, err := proxy.NewCredentials(map[string]string{"admin": "s3cret-pass"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(s *Server) { s.Auth = creds })
	for _, path := range []string{"/", "/api/members", "/api/csrf", "/api/status", "/static/app.js"} {
		code, h, _ := f.do(request{method: "GET", path: path})
		if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET %s without credentials: %d, WWW-Authenticate %q; want 401 Basic", path, code, h.Get("WWW-Authenticate"))
		}
		if code, _, _ := f.do(request{method: "GET", path: path, user: "admin", pass: "wrong"}); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d, want 401", path, code)
		}
	}
	f.want(http.StatusUnauthorized, request{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}, csrf: true})
	f.want(http.StatusOK, request{method: "GET", path: "/api/members", user: "admin", pass: "s3cret-pass"})
	f.want(http.StatusCreated, request{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}, csrf: true, user: "admin", pass: "s3cret-pass"})
	if strings.Contains(f.logs.String(), "s3cret-pass") || strings.Contains(f.logs.String(), "wrong") {
		t.Error("a password reached the log")
	}
	if !strings.Contains(f.logs.String(), "ui authentication failed") {
		t.Errorf("failed authentication not logged: %s", f.logs.String())
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t, nil)
	before, _ := os.ReadFile(f.path)
	pub := f.book().Peers[0].PublicKey.String()
	_ = pub
	for _, r := range []request{
		{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}},
		{method: "DELETE", path: "/api/members/b"},
		{method: "PATCH", path: "/api/members/b", body: map[string]any{"groups": []string{"x"}}},
		{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}, header: map[string]string{CSRFHeader: "forged"}},
		// The right token from another site's page is refused too.
		{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}, csrf: true, header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		body := f.want(http.StatusForbidden, r)
		if msg := errorOf(t, body); !strings.Contains(msg, "CSRF") && !strings.Contains(msg, "cross-site") {
			t.Errorf("%s %s: error %q does not say why", r.method, r.path, msg)
		}
	}
	if now, _ := os.ReadFile(f.path); !bytes.Equal(now, before) {
		t.Fatal("a request without the CSRF token changed the book")
	}
	var tok struct{ Token, Header string }
	json.Unmarshal(f.want(http.StatusOK, request{method: "GET", path: "/api/csrf"}), &tok)
	if tok.Header != CSRFHeader || len(tok.Token) < 40 {
		t.Fatalf("GET /api/csrf = %+v", tok)
	}
	f.want(http.StatusCreated, request{method: "POST", path: "/api/members", body: AddRequest{Name: "c"}, header: map[string]string{CSRFHeader: tok.Token, "Sec-Fetch-Site": "same-origin"}})
}

func TestLoopbackHostOnlyWithoutAuth(t *testing.T) {
	f := newFixture(t, nil)
	req, _ := http.NewRequest("GET", f.ts.URL+"/api/csrf", nil)
	req.Host = "attacker.example:8420" // a name pointed at 127.0.0.1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Host attacker.example: %d, want 403", resp.StatusCode)
	}
	for _, h := range []string{"127.0.0.1:1", "localhost:8420", "[::1]:8420", "127.3.4.5"} {
		if !loopbackHost(h) {
			t.Errorf("loopbackHost(%q) = false", h)
		}
	}
	for _, h := range []string{"10.0.0.1:80", "localhost.attacker.example", "[::2]:1", ""} {
		if loopbackHost(h) {
			t.Errorf("loopbackHost(%q) = true", h)
		}
	}
}

func TestAddAllocates(t *testing.T) {
	f := newFixture(t, nil)
	k, _ := peerbook.GeneratePrivateKey()
	var r1, r2 AddResponse
	json.Unmarshal(f.want(http.StatusCreated, request{method: "POST", path: "/api/members", csrf: true,
		body: AddRequest{Name: "c", PublicKey: k.Public().String(), Endpoint: "c.example.net:51820", Subnets: []string{"192.168.7.0/24"}, Groups: []string{"staff"}}}), &r1)
	json.Unmarshal(f.want(http.StatusCreated, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "d"}}), &r2)
	wantAddrs := func(r AddResponse, addrs ...string) {
		t.Helper()
		var got []string
		for _, a := range r.Member.Addresses {
			got = append(got, a.String())
		}
		if !slices.Equal(got, addrs) {
			t.Errorf("%s: addresses %v, want %v", r.Member.Name, got, addrs)
		}
	}
	wantAddrs(r1, "10.42.0.3", "fd42:42::3")
	wantAddrs(r2, "10.42.0.4", "fd42:42::4")
	if r1.Serial != 3 || r2.Serial != 4 {
		t.Errorf("serials %d, %d; want 3, 4", r1.Serial, r2.Serial)
	}
	if r1.Config != "" || r1.QRPNG != nil {
		t.Error("a member added with its public key got a config: there is no private key to give")
	}
	b := f.book()
	c, ok := b.PeerByName("c")
	if !ok || b.Serial != 4 || c.PublicKey != k.Public() || c.Endpoint.String() != "c.example.net:51820" ||
		!slices.Equal(c.Groups, []string{"staff"}) || len(c.Subnets) != 1 {
		t.Fatalf("book on disk: serial %d, c = %+v", b.Serial, c)
	}
	var list Members
	json.Unmarshal(f.want(http.StatusOK, request{method: "GET", path: "/api/members"}), &list)
	if len(list.Members) != 4 || list.Members[2].Name != "c" || list.Serial != 4 {
		t.Fatalf("GET /api/members = %+v", list)
	}
}

func TestAddRefusesBadInput(t *testing.T) {
	f := newFixture(t, nil)
	before, _ := os.ReadFile(f.path)
	book := f.book()
	k, _ := peerbook.GeneratePrivateKey()
	// The page says what book add would say: the same validator.
	_, wantBadName := peerbook.AddMember(book, peerbook.Member{Name: "Bad_Name", PublicKey: k.Public()})
	_, wantTaken := peerbook.AddMember(book, peerbook.Member{Name: "A", PublicKey: k.Public()})
	_, wantGroup := peerbook.AddMember(book, peerbook.Member{Name: "c", PublicKey: k.Public(), Groups: []string{"no spaces"}})
	_, wantEndpoint := peerbook.ParseEndpoint("no-port")
	if wantBadName == nil || wantTaken == nil || wantGroup == nil || wantEndpoint == nil {
		t.Fatal("the validator accepted what the test expects refused")
	}
	for _, c := range []struct {
		req  AddRequest
		code int
		want string
	}{
		{AddRequest{Name: "Bad_Name", PublicKey: k.Public().String()}, http.StatusUnprocessableEntity, wantBadName.Error()},
		{AddRequest{Name: "A", PublicKey: k.Public().String()}, http.StatusUnprocessableEntity, wantTaken.Error()},
		{AddRequest{Name: "c", PublicKey: k.Public().String(), Groups: []string{"no spaces"}}, http.StatusUnprocessableEntity, wantGroup.Error()},
		{AddRequest{Name: "c", Endpoint: "no-port"}, http.StatusBadRequest, "endpoint: " + wantEndpoint.Error()},
		{AddRequest{Name: "c", Subnets: []string{"192.168.1.0"}}, http.StatusBadRequest, `subnet "192.168.1.0" is not a network`},
		{AddRequest{Name: "c", PublicKey: "not a key"}, http.StatusBadRequest, "public key: "},
	} {
		msg := errorOf(t, f.want(c.code, request{method: "POST", path: "/api/members", csrf: true, body: c.req}))
		if !strings.Contains(msg, c.want) {
			t.Errorf("add %+v: error %q, want it to contain %q", c.req, msg, c.want)
		}
	}
	msg := errorOf(t, f.want(http.StatusBadRequest, request{method: "POST", path: "/api/members", csrf: true, body: map[string]any{"name": "c", "publickey": "x"}}))
	if !strings.Contains(msg, `unknown field "publickey"`) {
		t.Errorf("misspelt field: %q", msg)
	}
	if now, _ := os.ReadFile(f.path); !bytes.Equal(now, before) {
		t.Fatal("a refused add changed the book")
	}
}

func TestGeneratedKeyShownOnce(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.Status = fakeStatus{} })
	var r AddResponse
	json.Unmarshal(f.want(http.StatusCreated, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "phone"}}), &r)
	var priv string
	for line := range strings.Lines(r.Config) {
		if v, ok := strings.CutPrefix(line, "PrivateKey = "); ok {
			priv = strings.TrimSpace(v)
		}
	}
	k, err := peerbook.ParsePrivateKey(priv)
	if err != nil {
		t.Fatalf("config has no private key line: %v\n%s", err, r.Config)
	}
	if k.Public().String() != r.Member.PublicKey {
		t.Fatal("the shown private key does not belong to the member")
	}
	if !bytes.HasPrefix(r.QRPNG, []byte("\x89PNG")) {
		t.Fatal("no QR PNG in the answer")
	}
	// Seen once: in no later answer, not in the book, not in the log.
	f.seen.Reset()
	for _, path := range []string{"/", "/api/members", "/api/status", "/api/csrf"} {
		f.want(http.StatusOK, request{method: "GET", path: path})
	}
	f.want(http.StatusUnprocessableEntity, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "phone"}})
	f.want(http.StatusOK, request{method: "PATCH", path: "/api/members/phone", csrf: true, body: map[string]any{"groups": []string{"phones"}}})
	data, _ := os.ReadFile(f.path)
	for what, s := range map[string]string{"a later answer": f.seen.String(), "the book": string(data), "the log": f.logs.String()} {
		if strings.Contains(s, priv) {
			t.Errorf("the generated private key is in %s", what)
		}
	}
	if !strings.Contains(f.logs.String(), "member=phone") {
		t.Errorf("the addition is not logged: %s", f.logs.String())
	}
}

// fakeStatus is a node that reports every member of the fixture's book.
type fakeStatus struct{ err error }

func (s fakeStatus) Report(context.Context) (control.Report, error) {
	if s.err != nil {
		return control.Report{}, s.err
	}
	return control.Report{
		Status: node.Status{Name: "a", Mode: "netstack", BookSerial: 2, Peers: []node.PeerStatus{
			{Name: "b", Path: "direct", RxBytes: 1234, TxBytes: 5678, LastHandshake: time.Now().Add(-5 * time.Second)},
		}},
		LastRejection: &control.Rejection{Time: time.Now(), Error: "book.toml:7: bad endpoint"},
	}, nil
}

func TestNoSecretInAnyResponse(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.Status = fakeStatus{} })
	reqs := []request{
		{method: "GET", path: "/"},
		{method: "GET", path: "/api/members"},
		{method: "GET", path: "/api/members/a"},
		{method: "GET", path: "/api/status"},
		{method: "GET", path: "/api/csrf"},
		{method: "GET", path: "/static/app.js"},
		{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "c", PublicKey: "bad"}},
		{method: "PATCH", path: "/api/members/a", csrf: true, body: map[string]any{"endpoint": "127.0.0.1:1"}},
		{method: "DELETE", path: "/api/members/b", csrf: true},
		{method: "DELETE", path: "/api/members/nobody", csrf: true},
	}
	for _, r := range reqs {
		f.do(r)
	}
	for _, k := range f.privs {
		if strings.Contains(f.seen.String(), k) || strings.Contains(f.logs.String(), k) {
			t.Fatalf("a member's private key (%s…) is in a response or the log", k[:4])
		}
	}
	if !strings.Contains(f.seen.String(), "bad endpoint") {
		t.Error("the node's last refused book is not in /api/status")
	}
}

func TestRemoveAndSet(t *testing.T) {
	f := newFixture(t, nil)
	f.want(http.StatusCreated, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "c"}})
	f.want(http.StatusOK, request{method: "PATCH", path: "/api/members/c", csrf: true,
		body: map[string]any{"endpoint": "192.0.2.7:51820", "subnets": []string{"192.168.9.0/24"}, "groups": []string{"servers", "eu"}}})
	c, _ := f.book().PeerByName("c")
	if c.Endpoint.String() != "192.0.2.7:51820" || !slices.Equal(c.Groups, []string{"servers", "eu"}) || len(c.Subnets) != 1 {
		t.Fatalf("after PATCH: %+v", c)
	}
	f.want(http.StatusOK, request{method: "PATCH", path: "/api/members/c", csrf: true, body: map[string]any{"endpoint": "", "subnets": []string{}}})
	c, _ = f.book().PeerByName("c")
	if !c.Endpoint.IsZero() || len(c.Subnets) != 0 || len(c.Groups) != 2 {
		t.Fatalf("after clearing endpoint and subnets: %+v", c)
	}
	f.want(http.StatusBadRequest, request{method: "PATCH", path: "/api/members/c", csrf: true, body: map[string]any{}})
	f.want(http.StatusNotFound, request{method: "PATCH", path: "/api/members/nobody", csrf: true, body: map[string]any{"groups": []string{"x"}}})
	f.want(http.StatusNotFound, request{method: "DELETE", path: "/api/members/nobody", csrf: true})
	f.want(http.StatusOK, request{method: "DELETE", path: "/api/members/c", csrf: true})
	if _, ok := f.book().PeerByName("c"); ok {
		t.Fatal("c still in the book after DELETE")
	}
	serial := f.book().Serial
	f.want(http.StatusOK, request{method: "DELETE", path: "/api/members/b", csrf: true})
	msg := errorOf(t, f.want(http.StatusUnprocessableEntity, request{method: "DELETE", path: "/api/members/a", csrf: true}))
	if !strings.Contains(msg, "only member") {
		t.Errorf("removing the last member: %q", msg)
	}
	if got := f.book().Serial; got != serial+1 {
		t.Errorf("serial %d, want %d", got, serial+1)
	}
}

func TestSignedBook(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil)
	if err := os.WriteFile(f.path+".sig", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := errorOf(t, f.want(http.StatusConflict, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "c"}}))
	if !strings.Contains(msg, "is signed") || !strings.Contains(msg, "signing key") {
		t.Errorf("unsigned change of a signed book: %q", msg)
	}
	f.srv.Store = &FileStore{Path: f.path, Signer: signer}
	f.want(http.StatusCreated, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "c"}})
	allowed, err := booksign.ParseAllowedSigners("allowed", []byte(`admin namespaces="`+booksign.Namespace+`" `+string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.path)
	sig, _ := os.ReadFile(f.path + ".sig")
	if _, err := allowed.Verify(data, sig); err != nil {
		t.Fatalf("the changed book's signature: %v", err)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t, nil)
	msg := errorOf(t, f.want(http.StatusNotFound, request{method: "GET", path: "/api/status"}))
	if !strings.Contains(msg, "control socket") {
		t.Errorf("no status source: %q", msg)
	}
	f.srv.Status = fakeStatus{err: errors.New("no wgmesh node is serving this control socket")}
	f.want(http.StatusServiceUnavailable, request{method: "GET", path: "/api/status"})
	f.srv.Status = fakeStatus{}
	var rep control.Report
	if err := json.Unmarshal(f.want(http.StatusOK, request{method: "GET", path: "/api/status"}), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Name != "a" || len(rep.Peers) != 1 || rep.Peers[0].Path != "direct" || rep.LastRejection == nil {
		t.Fatalf("status = %+v", rep)
	}
}

func TestPage(t *testing.T) {
	f := newFixture(t, nil)
	code, h, body := f.do(request{method: "GET", path: "/"})
	if code != http.StatusOK || h.Get("Content-Security-Policy") != CSP {
		t.Fatalf("GET /: %d, CSP %q", code, h.Get("Content-Security-Policy"))
	}
	page := string(body)
	for _, want := range []string{`<tr data-name="a">`, `<tr data-name="b">`, "127.0.0.1:51999", "10.42.0.2, fd42:42::2", `<script src="/static/app.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The CSP allows no inline script or style: the page must have none.
	for _, bad := range []string{"<script>", "style=", "onclick", "<style"} {
		if strings.Contains(page, bad) {
			t.Errorf("page has inline %q, which the CSP blocks", bad)
		}
	}
	for path, ct := range map[string]string{"/static/app.js": "text/javascript", "/static/app.css": "text/css"} {
		code, h, _ := f.do(request{method: "GET", path: path})
		if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), ct) {
			t.Errorf("GET %s: %d %q", path, code, h.Get("Content-Type"))
		}
	}
	f.want(http.StatusNotFound, request{method: "GET", path: "/nothing"})
	f.want(http.StatusMethodNotAllowed, request{method: "PUT", path: "/api/members", csrf: true})
}

// Concurrent adds from several browsers all land, each with its own
// address: the store takes the book's lock.
func TestConcurrentAdds(t *testing.T) {
	f := newFixture(t, nil)
	const n = 6
	codes := make(chan int, n)
	for i := range n {
		go func() {
			code, _, _ := f.do(request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "m" + string(rune('a'+i))}})
			codes <- code
		}()
	}
	for range n {
		if code := <-codes; code != http.StatusCreated {
			t.Errorf("concurrent add: %d", code)
		}
	}
	b := f.book()
	seen := map[netip.Addr]bool{}
	for _, p := range b.Peers {
		for _, a := range p.Addresses {
			if seen[a] {
				t.Errorf("address %s given twice", a)
			}
			seen[a] = true
		}
	}
	if len(b.Peers) != 2+n || b.Serial != uint64(2+n) {
		t.Fatalf("%d members, serial %d; want %d, %d", len(b.Peers), b.Serial, 2+n, 2+n)
	}
}

// A book that does not parse is shown with its problems, and not changed.
func TestInvalidBook(t *testing.T) {
	f := newFixture(t, nil)
	data, _ := os.ReadFile(f.path)
	bad := strings.Replace(string(data), `name = "b"`, `name = "b_"`, 1)
	if bad == string(data) {
		t.Fatal("fixture book has no member b")
	}
	os.WriteFile(f.path, []byte(bad), 0o644)
	page := string(f.want(http.StatusOK, request{method: "GET", path: "/"}))
	if !strings.Contains(page, "The book cannot be read") || !strings.Contains(page, f.path+":") {
		t.Errorf("page does not show the book's problem:\n%s", page)
	}
	msg := errorOf(t, f.want(http.StatusInternalServerError, request{method: "POST", path: "/api/members", csrf: true, body: AddRequest{Name: "c"}}))
	if !strings.Contains(msg, "refused, not changed") {
		t.Errorf("add to a broken book: %q", msg)
	}
	if now, _ := os.ReadFile(f.path); string(now) != bad {
		t.Fatal("a broken book was changed")
	}
}
