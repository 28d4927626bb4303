package peerbook

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyStrict(t *testing.T) {
	if _, err := ParseKey(keyB); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"padding bits":   keyB[:42] + "p=", // same bytes, non-zero low bits
		"no padding":     keyB[:43],        // 43 characters
		"url alphabet":   strings.ReplaceAll(keyB, "/", "_"),
		"31 bytes":       keyB[:42] + "==",
		"space":          " " + keyB[:43],
		"zero":           strings.Repeat("A", 43) + "=",
		"empty":          "",
		"newline inside": keyB[:20] + "\n" + keyB[21:],
	}
	for name, s := range bad {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("%s: ParseKey(%q) accepted", name, s)
		}
	}
}

// RFC 7748 section 6.1: Alice's key pair.
func TestPublicKnownVector(t *testing.T) {
	priv, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	pub, _ := hex.DecodeString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	var k PrivateKey
	copy(k[:], priv)
	if got := k.Public(); hex.EncodeToString(got[:]) != hex.EncodeToString(pub) {
		t.Fatalf("Public() = %x, want %x", got, pub)
	}
}

// The testdata keys were made by `wg genkey` rules; their public keys are
// the ones in testdata/good/design.toml.
func TestWGGenkeyFormatRoundTrip(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	for _, name := range []string{"aws", "home"} {
		data, err := os.ReadFile("../testdata/keys/" + name + ".key")
		if err != nil {
			t.Fatal(err)
		}
		k, err := ReadPrivateKey(strings.NewReader(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		if k.Encode()+"\n" != string(data) {
			t.Errorf("%s: Encode = %q, file holds %q", name, k.Encode(), data)
		}
		p, _ := b.PeerByName(name)
		if k.Public() != p.PublicKey {
			t.Errorf("%s: public key %s, book has %s", name, k.Public(), p.PublicKey)
		}
	}

	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParsePrivateKey(k.Encode())
	if err != nil || k2 != k {
		t.Fatalf("round trip: %v", err)
	}
	if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
		t.Errorf("generated key is not clamped")
	}
	if pub, err := ParseKey(k.Public().String()); err != nil || pub != k.Public() {
		t.Errorf("public key round trip: %v", err)
	}
}

func TestPrivateKeyNeverPrints(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	enc := k.Encode()
	for _, verb := range []string{"%v", "%+v", "%s", "%x", "%X", "%q", "%d", "%#v", "%T %v"} {
		for _, arg := range []any{k, &k, []PrivateKey{k}, struct{ K PrivateKey }{k}} {
			out := fmt.Sprintf(verb, arg)
			if strings.Contains(out, enc) || strings.Contains(out, fmt.Sprintf("%x", k[:])) || strings.Contains(out, fmt.Sprint(k[0], " ", k[1], " ", k[2])) {
				t.Errorf("Sprintf(%q) leaks the key: %s", verb, out)
			}
		}
	}
	for _, verb := range []string{"%v", "%s", "%x", "%#v"} {
		if out := fmt.Sprintf(verb, k); out != "(private key)" {
			t.Errorf("Sprintf(%q) = %q, want (private key)", verb, out)
		}
	}
	if _, err := ParsePrivateKey(enc[:40] + "!!!="); err == nil || strings.Contains(err.Error(), enc[:40]) {
		t.Errorf("ParsePrivateKey error leaks input or accepts it: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.key")
	k, _ := GeneratePrivateKey()
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if err := WriteKeyFile(path, k); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("overwrite: err = %v", err)
	}
	got, err := ReadKeyFile(path)
	if err != nil || got != k {
		t.Fatalf("ReadKeyFile: %v", err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadKeyFile(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("0644 key file: err = %v, want advice to chmod 600", err)
	}
	if err != nil && strings.Contains(err.Error(), k.Encode()) {
		t.Error("error leaks the key")
	}

	missing := filepath.Join(dir, "missing.key")
	if _, err := ReadKeyFile(missing); err == nil || !strings.Contains(err.Error(), "wgmesh key generate --out "+missing) {
		t.Errorf("missing key file: err = %v, want advice to generate it", err)
	}
	if _, err := ReadKeyFile(dir); err == nil {
		t.Error("ReadKeyFile accepted a directory")
	}
}
