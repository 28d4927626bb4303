package booksign

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

var testBook = []byte("format = 1\nserial = 7\n\n[mesh]\nnetworks = [\"10.42.0.0/16\"]\n")

func newSigner(t testing.TB, typ string) ssh.Signer {
	t.Helper()
	var key any
	var err error
	switch typ {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("unknown key type %q", typ)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allowedLine(principal string, s ssh.Signer) string {
	return principal + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

func mustAllowed(t testing.TB, lines ...string) *AllowedSigners {
	t.Helper()
	a, err := ParseAllowedSigners("allowed_signers", []byte(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			s := newSigner(t, typ)
			sig, err := Sign(s, testBook)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(sig, []byte("-----BEGIN SSH SIGNATURE-----\n")) ||
				!bytes.HasSuffix(sig, []byte("-----END SSH SIGNATURE-----\n")) {
				t.Fatalf("not armored like ssh-keygen:\n%s", sig)
			}
			for _, l := range strings.Split(strings.TrimSpace(string(sig)), "\n") {
				if len(l) > 70 {
					t.Errorf("armor line of %d characters, ssh-keygen wraps at 70", len(l))
				}
			}
			a := mustAllowed(t, "# admins", "", allowedLine("admin@example.com", s))
			p, err := a.Verify(testBook, sig)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p != "admin@example.com" {
				t.Errorf("principal = %q", p)
			}
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	s := newSigner(t, "ed25519")
	other := newSigner(t, "ed25519")
	a := mustAllowed(t, allowedLine("admin@example.com", s))
	sig, err := Sign(s, testBook)
	if err != nil {
		t.Fatal(err)
	}
	gitSig, err := signNamespace(s, testBook, "git")
	if err != nil {
		t.Fatal(err)
	}
	otherSig, err := Sign(other, testBook)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(testBook)
	tampered[len(tampered)-3] ^= 1

	// A flipped byte inside the signature value itself (the last bytes of
	// the blob) keeps the structure intact.
	blob, err := unarmor(sig)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)-1] ^= 1
	corruptSig := armor(blob)

	tests := []struct {
		name string
		data []byte
		sig  []byte
		want error
		msg  string
	}{
		{"empty", testBook, nil, ErrNoSignature, "no signature"},
		{"blank", testBook, []byte(" \n"), ErrNoSignature, "no signature"},
		{"tampered book", tampered, sig, ErrBadSignature, "does not match"},
		{"tampered signature", testBook, corruptSig, ErrBadSignature, "does not match"},
		{"wrong namespace", testBook, gitSig, ErrNamespace, `"git"`},
		{"unknown signer", testBook, otherSig, ErrUnknownSigner, "is not in allowed_signers"},
		{"no armor", testBook, []byte("hello"), ErrMalformed, "BEGIN SSH SIGNATURE"},
		{"pgp armor", testBook, []byte("-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"), ErrMalformed, "BEGIN SSH SIGNATURE"},
		{"truncated", testBook, sig[:len(sig)-40], ErrMalformed, "END SSH SIGNATURE"},
		{"bad base64", testBook, []byte(armorBegin + "\n!!!!\n" + armorEnd + "\n"), ErrMalformed, "base64"},
		{"not sshsig", testBook, armor([]byte("NOTSIG\x00\x00\x00\x01")), ErrMalformed, "preamble"},
		{"short blob", testBook, armor(blob[:40]), ErrMalformed, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Verify(tt.data, tt.sig)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %q, %v; want %v", p, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			if p != "" {
				t.Errorf("principal %q returned with an error", p)
			}
		})
	}
}

func TestAllowedSignersOptions(t *testing.T) {
	s := newSigner(t, "ed25519")
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
	sig, err := Sign(s, testBook)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		ok   bool
		msg  string
	}{
		{`admin ` + key + ` laptop key`, true, ""},
		{`"admin" ` + key, true, ""},
		{`admin,ops namespaces="wgmesh-peerbook" ` + key, true, ""},
		{`admin namespaces="git,wgmesh-*" ` + key, true, ""},
		{`admin namespaces="*,!wgmesh-peerbook" ` + key, false, "may sign only namespaces"},
		{`admin namespaces="git" ` + key, false, "may sign only namespaces"},
		{`admin valid-before="20000101Z" ` + key, false, "expired"},
		{`admin valid-after="29990101" ` + key, false, "valid only after"},
		{`admin valid-after="20000101",valid-before="29991231235959Z" ` + key, true, ""},
	}
	for _, tt := range tests {
		a := mustAllowed(t, tt.line)
		p, err := a.Verify(testBook, sig)
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.line, err)
		case tt.ok && p != strings.Fields(strings.ReplaceAll(tt.line, `"`, ""))[0]:
			t.Errorf("%s: principal %q", tt.line, p)
		case !tt.ok && !errors.Is(err, ErrUnknownSigner):
			t.Errorf("%s: err = %v, want ErrUnknownSigner", tt.line, err)
		case !tt.ok && !strings.Contains(err.Error(), tt.msg):
			t.Errorf("%s: error %q does not mention %q", tt.line, err, tt.msg)
		}
	}

	// A key listed twice: a line restricted to git does not hide a later
	// line that allows books.
	a := mustAllowed(t, `git namespaces="git" `+key, `books `+key)
	if p, err := a.Verify(testBook, sig); err != nil || p != "books" {
		t.Errorf("second line: %q, %v", p, err)
	}
}

func TestAllowedSignersBadLines(t *testing.T) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t, "ed25519").PublicKey())))
	file := strings.Join([]string{
		"# comment",
		"admin " + key,                          // 2: fine
		"lonely",                                // 3
		"ca@example.com cert-authority " + key,  // 4
		"admin ssh-ed25519 AAAAnotbase64!!",     // 5
		`admin permit-x11 ` + key,               // 6
		`admin namespaces="unterminated ` + key, // 7
		`admin valid-after="yesterday" ` + key,  // 8
		"",
	}, "\n")
	_, err := ParseAllowedSigners("/etc/wgmesh/allowed_signers", []byte(file))
	if err == nil {
		t.Fatal("bad file accepted")
	}
	for _, want := range []string{
		"/etc/wgmesh/allowed_signers:3: missing key",
		"/etc/wgmesh/allowed_signers:4: cert-authority is not supported",
		"/etc/wgmesh/allowed_signers:5: invalid public key",
		`/etc/wgmesh/allowed_signers:6: unsupported option "permit-x11"`,
		"/etc/wgmesh/allowed_signers:7: unterminated quote",
		`/etc/wgmesh/allowed_signers:8: valid-after: bad time "yesterday"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":2:") {
		t.Errorf("good line reported:\n%v", err)
	}

	if _, err := ParseAllowedSigners("empty", []byte("# nobody\n\n")); err == nil || !strings.Contains(err.Error(), "no signers") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := LoadAllowedSigners(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadSignerRefusals(t *testing.T) {
	dir := t.TempDir()
	s := newSigner(t, "ed25519")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	var pemBuf bytes.Buffer
	if err := pem.Encode(&pemBuf, block); err != nil {
		t.Fatal(err)
	}

	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, pemBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSigner(loose)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+loose) {
		t.Errorf("group-readable key: %v", err)
	}

	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, pemBuf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSigner(good)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.PublicKey().Marshal(), mustPub(t, priv).Marshal()) {
		t.Error("loaded a different key")
	}

	pub := filepath.Join(dir, "key.pub")
	if err := os.WriteFile(pub, ssh.MarshalAuthorizedKey(s.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(pub); err == nil || !strings.Contains(err.Error(), "is a public key") {
		t.Errorf("public key file: %v", err)
	}

	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	pemBuf.Reset()
	if err := pem.Encode(&pemBuf, enc); err != nil {
		t.Fatal(err)
	}
	encPath := filepath.Join(dir, "enc")
	if err := os.WriteFile(encPath, pemBuf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSigner(encPath)
	if err == nil || !strings.Contains(err.Error(), "passphrase") || !strings.Contains(err.Error(), "ssh-keygen -Y sign") {
		t.Errorf("encrypted key: %v", err)
	}
	assertNoKeyMaterial(t, err, pemBuf.Bytes())

	if _, err := LoadSigner(filepath.Join(dir, "absent")); err == nil {
		t.Error("missing key file accepted")
	}
}

func assertNoKeyMaterial(t *testing.T, err error, keyFile []byte) {
	t.Helper()
	if err == nil {
		return
	}
	for _, line := range strings.Split(string(keyFile), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
			t.Errorf("error contains key material: %v", err)
		}
	}
}

func TestMatchPatternList(t *testing.T) {
	tests := []struct {
		list string
		want bool
	}{
		{"wgmesh-peerbook", true},
		{"git,wgmesh-peerbook", true},
		{"wgmesh-*", true},
		{"wgmesh-peerboo?", true},
		{"*", true},
		{"*,!wgmesh-peerbook", false},
		{"git", false},
		{"wgmesh", false},
		{"[w]gmesh-peerbook", false},
	}
	for _, tt := range tests {
		if got := matchPatternList(Namespace, tt.list); got != tt.want {
			t.Errorf("matchPatternList(%q) = %v, want %v", tt.list, got, tt.want)
		}
	}
}

func TestVerifyExpiryUsesClock(t *testing.T) {
	s := newSigner(t, "ed25519")
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
	a := mustAllowed(t, `admin valid-before="20300101Z" `+key)
	sig, _ := Sign(s, testBook)
	if _, err := a.verifyAt(testBook, sig, time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("before expiry: %v", err)
	}
	if _, err := a.verifyAt(testBook, sig, time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrUnknownSigner) {
		t.Errorf("after expiry: %v", err)
	}
}

// sshKeygen returns the path of ssh-keygen. Without it the interop tests
// cannot run: they fail under CI (which must have it) and skip elsewhere.
func sshKeygen(t *testing.T) string {
	t.Helper()
	return testutil.Tool(t, "ssh-keygen", "openssh-client")
}

func run(t *testing.T, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.Bytes(), err
}

// keygen makes a key with the real ssh-keygen; it returns the private key
// path and the public key line.
func keygen(t *testing.T, keygenPath, dir, typ string) (string, string) {
	t.Helper()
	key := filepath.Join(dir, "id_"+typ)
	args := []string{"-q", "-t", typ, "-N", "", "-C", "test@wgmesh", "-f", key}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	if out, err := run(t, nil, keygenPath, args...); err != nil {
		t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return key, strings.TrimSpace(string(pub))
}

func TestInteropWithSSHKeygen(t *testing.T) {
	kg := sshKeygen(t)
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			dir := t.TempDir()
			key, pub := keygen(t, kg, dir, typ)
			book := filepath.Join(dir, "book.toml")
			if err := os.WriteFile(book, testBook, 0o644); err != nil {
				t.Fatal(err)
			}
			allowedPath := filepath.Join(dir, "allowed_signers")
			if err := os.WriteFile(allowedPath, []byte("admin@example.com "+pub+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			allowed, err := LoadAllowedSigners(allowedPath)
			if err != nil {
				t.Fatal(err)
			}

			// ssh-keygen signs, we verify.
			if out, err := run(t, nil, kg, "-Y", "sign", "-n", Namespace, "-f", key, book); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
			}
			theirs, err := os.ReadFile(book + ".sig")
			if err != nil {
				t.Fatal(err)
			}
			if p, err := allowed.Verify(testBook, theirs); err != nil || p != "admin@example.com" {
				t.Fatalf("verifying ssh-keygen's signature: %q, %v\n%s", p, err, theirs)
			}
			tampered := append(bytes.Clone(testBook), '\n')
			if _, err := allowed.Verify(tampered, theirs); !errors.Is(err, ErrBadSignature) {
				t.Errorf("ssh-keygen signature over a tampered book: %v", err)
			}

			// We sign, ssh-keygen verifies.
			signer, err := LoadSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := Sign(signer, testBook)
			if err != nil {
				t.Fatal(err)
			}
			if typ == "ed25519" && !bytes.Equal(ours, theirs) {
				// ed25519 is deterministic: same key, same data, same bytes.
				t.Errorf("not byte-identical to ssh-keygen:\nours:\n%s\ntheirs:\n%s", ours, theirs)
			}
			ourSig := filepath.Join(dir, "ours.sig")
			if err := os.WriteFile(ourSig, ours, 0o644); err != nil {
				t.Fatal(err)
			}
			verifyArgs := []string{"-Y", "verify", "-f", allowedPath, "-I", "admin@example.com", "-n", Namespace, "-s", ourSig}
			if out, err := run(t, testBook, kg, verifyArgs...); err != nil {
				t.Fatalf("ssh-keygen -Y verify refused our signature: %v\n%s", err, out)
			}
			if out, err := run(t, tampered, kg, verifyArgs...); err == nil {
				t.Errorf("ssh-keygen accepted our signature over a tampered book:\n%s", out)
			}
		})
	}
}

func TestInteropWrongNamespaceAndPassphrase(t *testing.T) {
	kg := sshKeygen(t)
	dir := t.TempDir()
	key, pub := keygen(t, kg, dir, "ed25519")
	book := filepath.Join(dir, "book.toml")
	if err := os.WriteFile(book, testBook, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, nil, kg, "-Y", "sign", "-n", "git", "-f", key, book); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(book + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	allowed := mustAllowed(t, "admin "+pub)
	if _, err := allowed.Verify(testBook, sig); !errors.Is(err, ErrNamespace) {
		t.Errorf("git-namespace signature: %v", err)
	}

	enc := filepath.Join(dir, "id_enc")
	if out, err := run(t, nil, kg, "-q", "-t", "ed25519", "-N", "correct horse", "-f", enc); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	_, err = LoadSigner(enc)
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("passphrase-protected key: %v", err)
	}
	keyFile, _ := os.ReadFile(enc)
	assertNoKeyMaterial(t, err, keyFile)
}

func mustPub(t testing.TB, priv ed25519.PrivateKey) ssh.PublicKey {
	t.Helper()
	p, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
