package booksign

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fuzzSigner is a fixed key, so that seeds and the allowed signers of the
// fuzz targets stay the same from run to run.
func fuzzSigner(t testing.TB) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzVerifySignature: a .sig file is untrusted input (it comes with a
// remote book). Parsing and verifying never panic, every failure wraps one
// of the documented sentinels, whatever parses survives re-armoring
// unchanged, and a signature that verifies is bound to its data.
func FuzzVerifySignature(f *testing.F) {
	s := fuzzSigner(f)
	good, err := Sign(s, testBook)
	if err != nil {
		f.Fatal(err)
	}
	other, _ := signNamespace(s, testBook, "git")
	f.Add(good)
	f.Add(other)
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))
	f.Add([]byte(armorBegin + "\n" + armorEnd + "\n"))
	f.Add([]byte(armorBegin + "\nU1NIU0lH\n" + armorEnd + "\n"))
	f.Add([]byte{})
	a := mustAllowed(f, allowedLine("admin@example.com", s))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	f.Fuzz(func(t *testing.T, sigText []byte) {
		sig, perr := parseSignature(sigText)
		principal, err := a.verifyAt(testBook, sigText, now)
		if perr != nil {
			if !errors.Is(perr, ErrMalformed) && !errors.Is(perr, ErrNoSignature) {
				t.Fatalf("parse error wraps no sentinel: %v", perr)
			}
			if err == nil || err.Error() != perr.Error() {
				t.Fatalf("verify of an unparsable signature: %v (parse: %v)", err, perr)
			}
			return
		}
		if err != nil {
			for _, e := range []error{ErrMalformed, ErrNamespace, ErrBadSignature, ErrUnknownSigner} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("verify error wraps no sentinel: %v", err)
		}

		// parse -> format -> parse: the same fields.
		blob, _ := unarmor(sigText)
		again, err2 := parseSignature(armor(blob))
		if err2 != nil {
			t.Fatalf("re-armored signature refused: %v", err2)
		}
		if !bytes.Equal(again.publicKey.Marshal(), sig.publicKey.Marshal()) || again.namespace != sig.namespace ||
			again.hashAlg != sig.hashAlg || !bytes.Equal(ssh.Marshal(again.sig), ssh.Marshal(sig.sig)) {
			t.Fatal("re-armoring changed the signature")
		}

		if err == nil {
			if principal != "admin@example.com" || !bytes.Equal(sig.publicKey.Marshal(), s.PublicKey().Marshal()) || sig.namespace != Namespace {
				t.Fatalf("accepted a signature by %s in %q as %q", ssh.FingerprintSHA256(sig.publicKey), sig.namespace, principal)
			}
			if _, err := a.verifyAt(append(bytes.Clone(testBook), ' '), sigText, now); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("signature also verifies other data: %v", err)
			}
		}
	})
}

// FuzzParseAllowedSigners: an allowed_signers file never makes the parser
// panic; every problem is a FILE:LINE message; an accepted file lists only
// plain keys, each of which its own line yields again when parsed alone.
func FuzzParseAllowedSigners(f *testing.F) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(fuzzSigner(f).PublicKey())))
	for _, l := range []string{
		"admin@example.com " + key,
		"# admins\n\nadmin,ops " + key + " comment here",
		`admin namespaces="git,wgmesh-*" ` + key,
		`"admin one" namespaces="*,!wgmesh-peerbook" ` + key,
		`admin valid-after="20000101",valid-before="29991231235959Z" ` + key,
		`admin valid-after="200001011200" ` + key,
		`admin cert-authority ` + key,
		`admin namespaces="unterminated ` + key,
		"admin ssh-ed25519 AAAA",
		"admin\r\n" + key,
	} {
		f.Add([]byte(l + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAllowedSigners("allowed_signers", data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "allowed_signers:") {
					t.Fatalf("problem without FILE[:LINE]: %q", line)
				}
			}
			return
		}
		if a.Len() == 0 {
			t.Fatal("accepted a file without signers")
		}
		lines := strings.Split(string(data), "\n")
		for _, e := range a.entries {
			if e.key == nil || !bytes.Equal(e.keyBytes, e.key.Marshal()) {
				t.Fatalf("line %d: entry without its key", e.line)
			}
			if _, cert := e.key.(*ssh.Certificate); cert {
				t.Fatalf("line %d: certificate accepted", e.line)
			}
			if e.line < 1 || e.line > len(lines) {
				t.Fatalf("entry at line %d of %d", e.line, len(lines))
			}
			alone, err := parseAllowedLine(lines[e.line-1])
			if err != nil || alone == nil || !bytes.Equal(alone.keyBytes, e.keyBytes) || alone.namespaces != e.namespaces ||
				!alone.validAfter.Equal(e.validAfter) || !alone.validUntil.Equal(e.validUntil) {
				t.Fatalf("line %d parses differently alone: %v", e.line, err)
			}
			// The pattern matcher sees every namespace list a file can hold.
			matchPatternList(Namespace, e.namespaces)
		}
	})
}
