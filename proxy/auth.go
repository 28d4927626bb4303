package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"unicode"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// maxCredentialsFile bounds the size of a credentials file.
const maxCredentialsFile = 1 << 20

// Credentials are the users allowed to use a proxy, with their passwords.
// The zero value allows no one. Passwords are kept only as SHA-256 digests
// in memory, so they never end up in a log or a crash dump as text.
type Credentials struct {
	users map[string][sha256.Size]byte
}

// NewCredentials returns credentials for the given user → password map.
// Names and passwords must be 1 to 255 bytes (the SOCKS5 limit) without
// control characters, and names may not contain ':'.
func NewCredentials(users map[string]string) (*Credentials, error) {
	c := &Credentials{users: make(map[string][sha256.Size]byte, len(users))}
	for u, p := range users {
		if err := checkCredential(u, p); err != nil {
			return nil, err
		}
		c.users[u] = sha256.Sum256([]byte(p))
	}
	return c, nil
}

// LoadCredentials reads a file of "user:password" lines. Blank lines and
// lines starting with '#' are ignored; a password runs to the end of its line
// and may contain ':'. Like a private key file, the file must not be
// readable or writable by group or others (chmod 600). Problems are
// reported as FILE:LINE: message.
func LoadCredentials(path string) (*Credentials, error) {
	data, err := fileutil.ReadPrivateFile(path, maxCredentialsFile, "credentials file", func(perm fs.FileMode) error {
		return fmt.Errorf("credentials file %s: permissions %04o are too open: passwords must be readable by their owner only; fix with: chmod 600 %s", path, perm, path)
	})
	if err != nil {
		return nil, err
	}
	return parseCredentials(path, bytes.NewReader(data))
}

func parseCredentials(path string, r io.Reader) (*Credentials, error) {
	c := &Credentials{users: make(map[string][sha256.Size]byte)}
	seen := make(map[string]int)
	var problems []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if t := strings.TrimSpace(text); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		user, pass, ok := strings.Cut(text, ":")
		if !ok {
			problems = append(problems, fmt.Errorf("%s:%d: want user:password", path, line))
			continue
		}
		if err := checkCredential(user, pass); err != nil {
			problems = append(problems, fmt.Errorf("%s:%d: %w", path, line, err))
			continue
		}
		if first, dup := seen[user]; dup {
			problems = append(problems, fmt.Errorf("%s:%d: user %q repeats line %d", path, line, user, first))
			continue
		}
		seen[user] = line
		c.users[user] = sha256.Sum256([]byte(pass))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(c.users) == 0 {
		return nil, fmt.Errorf("%s: no user:password lines", path)
	}
	return c, nil
}

// checkCredential never quotes the password: error messages end up in logs.
func checkCredential(user, pass string) error {
	switch {
	case user == "":
		return errors.New("empty user name")
	case len(user) > 255:
		return errors.New("user name longer than 255 bytes")
	case strings.ContainsFunc(user, unicode.IsControl), strings.Contains(user, ":"):
		return fmt.Errorf("user name %q has a control character or ':'", user)
	case pass == "":
		return fmt.Errorf("user %q has an empty password", user)
	case len(pass) > 255:
		return fmt.Errorf("password of user %q is longer than 255 bytes", user)
	case strings.ContainsFunc(pass, unicode.IsControl):
		return fmt.Errorf("password of user %q has a control character", user)
	}
	return nil
}

// Valid reports whether user exists and pass is their password. It compares
// in constant time.
func (c *Credentials) Valid(user, pass string) bool {
	if c == nil {
		return false
	}
	want, ok := c.users[user]
	got := sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1 && ok
}

// Len returns the number of users.
func (c *Credentials) Len() int {
	if c == nil {
		return 0
	}
	return len(c.users)
}
