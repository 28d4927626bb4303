package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// runCLIBounded is runCLI that fails the test when the command does not
// end within a few seconds, as a read of /dev/zero without a limit would.
func runCLIBounded(t *testing.T, args ...string) (int, string) {
	t.Helper()
	type result struct {
		code int
		out  string
	}
	r := testutil.Within(t, 5*time.Second, "wgmesh "+strings.Join(args, " "), func() result {
		code, out, errOut := runCLI(t, "", args...)
		return result{code, out + errOut}
	})
	return r.code, r.out
}

func TestBookCommandsReadLimited(t *testing.T) {
	devZero := testutil.DevZero(t)
	dir := t.TempDir()
	ms := newMembers(t, dir, "alpha", "beta")
	book := filepath.Join(dir, "book.toml")
	writeBook(t, book, 1, ms)
	key, allowed := newSigner(t, dir, "id_ed25519")
	zero := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(devZero, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("verify, signature is /dev/zero", func(t *testing.T) {
		zero("book.toml.sig")
		code, out := runCLIBounded(t, "book", "verify", "--trusted-signers", allowed, book)
		if code != 1 || !strings.Contains(out, book+".sig is not a regular file (a character device)") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
	t.Run("verify, signature too large", func(t *testing.T) {
		os.Remove(book + ".sig")
		big("book.toml.sig", 1<<20)
		code, out := runCLIBounded(t, "book", "verify", "--trusted-signers", allowed, book)
		if code != 1 || !strings.Contains(out, book+".sig is larger than the limit of 65536 bytes") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
	t.Run("sign, book is /dev/zero", func(t *testing.T) {
		p := zero("zero.toml")
		code, out := runCLIBounded(t, "book", "sign", "--key", key, p)
		if code != 1 || !strings.Contains(out, p+" is not a regular file") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
	t.Run("import, config is /dev/zero", func(t *testing.T) {
		p := zero("zero.conf")
		code, out := runCLIBounded(t, "book", "import", p)
		if code != 1 || !strings.Contains(out, p+" is not a regular file") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
	t.Run("import, config too large", func(t *testing.T) {
		p := big("big.conf", peerbook.MaxWGQuickSize+1)
		code, out := runCLIBounded(t, "book", "import", p)
		if code != 1 || !strings.Contains(out, p+" is larger than the limit of 1048576 bytes") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
}

func TestBookCAReadLimited(t *testing.T) {
	devZero := testutil.DevZero(t)
	err := testutil.Within(t, 5*time.Second, "--book-ca /dev/zero", func() error { _, err := clientWithCA(devZero); return err })
	if err == nil || !strings.Contains(err.Error(), "--book-ca: /dev/zero is not a regular file") {
		t.Fatalf("got %v", err)
	}
}

// TestBookCAClientUsesNoProxy: the client made for --book-ca must ignore
// HTTPS_PROXY like booksource's own (see booksource's
// TestNoProxyFromEnvironment for the behaviour).
func TestBookCAClientUsesNoProxy(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := clientWithCA(ca)
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("--book-ca client: transport %T with a proxy function; want none", c.Transport)
	}
}
