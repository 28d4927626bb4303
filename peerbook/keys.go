package peerbook

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/curve25519"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// KeyLen is the length of a WireGuard key in bytes.
const KeyLen = 32

// Key is a WireGuard public key. Public keys are not secret: String returns
// the standard base64 form used by wg(8).
type Key [KeyLen]byte

// PrivateKey is a WireGuard private key. It deliberately has no String
// method and formats as a redacted placeholder, so it cannot leak through a
// log line or an error by accident.
type PrivateKey [KeyLen]byte

// ParseKey decodes a public key in strict standard base64 (44 characters,
// one '=' of padding), as printed by `wg pubkey`.
func ParseKey(s string) (Key, error) {
	b, err := decodeKey(s)
	if err != nil {
		return Key{}, err
	}
	var k Key
	copy(k[:], b)
	if k.IsZero() {
		return Key{}, errors.New("key is all zeros; generate one with `wgmesh key generate`")
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	if len(s) != 44 {
		return nil, fmt.Errorf("key must be 44 characters of base64 (32 bytes), got %d characters", len(s))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	switch {
	case err == nil && len(b) == KeyLen:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("key decodes to %d bytes; a WireGuard key is exactly %d bytes", len(b), KeyLen)
	}
	// Say why, since "invalid base64" sends people hunting for typos.
	if lb, lerr := base64.StdEncoding.DecodeString(s); lerr == nil && len(lb) == KeyLen {
		// wg(8) refuses such keys too: the bits below the last full byte
		// must be zero, so this key was altered after it was generated.
		return nil, errors.New("key is not strict base64: the character before '=' has padding bits set; copy the key again from `wg pubkey` or `wgmesh key public`")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, fmt.Errorf("key contains %q at position %d, which is not a base64 character", c, i+1)
		}
	}
	return nil, errors.New("key is not valid base64 of 32 bytes (use the output of `wg pubkey` or `wgmesh key public`)")
}

// String returns the key in standard base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns an abbreviated form for logs, like "xTIB…p8Dg=".
func (k Key) Short() string {
	s := k.String()
	return s[:4] + "…" + s[len(s)-5:]
}

// IsZero reports whether the key is all zeros.
func (k Key) IsZero() bool { return k == Key{} }

// GeneratePrivateKey returns a new clamped Curve25519 private key.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := io.ReadFull(rand.Reader, k[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	k.clamp()
	return k, nil
}

func (k *PrivateKey) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// ParsePrivateKey decodes a private key in `wg genkey` format. The error
// never contains the input.
func ParsePrivateKey(s string) (PrivateKey, error) {
	b, err := decodeKey(s)
	if err != nil {
		return PrivateKey{}, errors.New("private key is not valid base64 of 32 bytes (expected the output of `wg genkey` or `wgmesh key generate`)")
	}
	var k PrivateKey
	copy(k[:], b)
	if k.IsZero() {
		return PrivateKey{}, errors.New("private key is all zeros")
	}
	return k, nil
}

// IsZero reports whether the key is all zeros.
func (k PrivateKey) IsZero() bool { return k == PrivateKey{} }

// Public derives the public key.
func (k PrivateKey) Public() Key {
	var pub Key
	c := k
	c.clamp()
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&c))
	return pub
}

// Encode returns the key in `wg genkey` format. Only for writing key files.
func (k PrivateKey) Encode() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Format prints a placeholder whatever the verb, so %v, %s and %x of a
// private key never show it.
func (k PrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, "(private key)") }

// GoString keeps %#v from printing the bytes.
func (k PrivateKey) GoString() string { return "(private key)" }

// maxKeyFile bounds a key file: a key and a newline, with room for
// comments an admin may add.
const maxKeyFile = 1024

// ReadPrivateKey reads a key in `wg genkey` format from r.
func ReadPrivateKey(r io.Reader) (PrivateKey, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxKeyFile))
	if err != nil {
		return PrivateKey{}, err
	}
	return ParsePrivateKey(strings.TrimSpace(string(b)))
}

// ReadKeyFile reads a private key file. Like ssh, it refuses a file that
// group or others can read or write, and says how to fix it.
func ReadKeyFile(path string) (PrivateKey, error) {
	data, err := fileutil.ReadPrivateFile(path, maxKeyFile, "key file", func(perm fs.FileMode) error {
		return fmt.Errorf("key file %s: permissions %04o are too open: the private key must be readable by its owner only; fix with: chmod 600 %s", path, perm, path)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return PrivateKey{}, fmt.Errorf("key file %s does not exist; create it with: wgmesh key generate --out %s", path, path)
	}
	if err != nil {
		return PrivateKey{}, err
	}
	k, err := ReadPrivateKey(bytes.NewReader(data))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k to a new file with mode 0600. It refuses to
// overwrite an existing file.
func WriteKeyFile(path string, k PrivateKey) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("key file %s already exists; refusing to overwrite it (remove it first or choose another --out)", path)
		}
		return fmt.Errorf("key file: %w", err)
	}
	if _, err := io.WriteString(f, k.Encode()+"\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("key file %s: %w", path, err)
	}
	return f.Close()
}
