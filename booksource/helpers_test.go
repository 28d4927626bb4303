package booksource

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
)

// wait bounds every wait for something that should happen.
const wait = 10 * time.Second

// quiet is how long a test watches for something that must not happen.
const quiet = 600 * time.Millisecond

// makeBook returns a valid book with the given serial; variant changes the
// content without changing the serial.
func makeBook(serial uint64, variant int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "format = 1\nserial = %d\n\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n", serial)
	for i := 1; i <= 2+variant; i++ {
		key := make([]byte, 32)
		for j := range key {
			key[j] = byte(i)
		}
		fmt.Fprintf(&b, "\n[[peer]]\nname = \"m%d\"\npublic_key = %q\naddresses = [\"10.42.0.%d\"]\n",
			i, base64.StdEncoding.EncodeToString(key), i)
	}
	return []byte(b.String())
}

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allowedFor(t testing.TB, principal string, s ssh.Signer) *booksign.AllowedSigners {
	t.Helper()
	line := principal + " " + string(ssh.MarshalAuthorizedKey(s.PublicKey()))
	a, err := booksign.ParseAllowedSigners("allowed_signers", []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sign(t testing.TB, s ssh.Signer, data []byte) []byte {
	t.Helper()
	sig, err := booksign.Sign(s, data)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// replaceFile writes data to a temporary file and renames it over path, as
// editors and config management tools do.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func recv(t testing.TB, ch <-chan Update) Update {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("updates closed")
		}
		return u
	case <-time.After(wait):
		t.Fatalf("no update within %v", wait)
	}
	panic("unreachable")
}

// recvBook receives until an accepted book arrives, skipping refusals that
// the test does not care about (a server still failing, say).
func recvBook(t testing.TB, ch <-chan Update) Update {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("updates closed")
			}
			if u.Err == nil {
				return u
			}
		case <-deadline:
			t.Fatalf("no accepted book within %v", wait)
		}
	}
}

func recvErr(t testing.TB, ch <-chan Update) Update {
	t.Helper()
	u := recv(t, ch)
	if u.Err == nil {
		t.Fatalf("book with serial %d accepted, want a refusal", u.Book.Serial)
	}
	if u.Book != nil {
		t.Fatalf("refused update carries a book: %v", u.Err)
	}
	return u
}

// expectQuiet fails if anything arrives on ch within quiet.
func expectQuiet(t testing.TB, ch <-chan Update) {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("updates closed")
		}
		if u.Book != nil {
			t.Fatalf("unexpected update: book serial %d", u.Book.Serial)
		}
		t.Fatalf("unexpected update: %v", u.Err)
	case <-time.After(quiet):
	}
}

// expectClosed checks that the source's goroutine ends with ctx.
func expectClosed(t testing.TB, cancel context.CancelFunc, ch <-chan Update) {
	t.Helper()
	cancel()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("updates not closed within %v of cancelling", wait)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = testWriter{}
