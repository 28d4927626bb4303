package booksign

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// maxAllowedSignersSize bounds what LoadAllowedSigners reads: a file of
// keys, never anywhere near this.
const maxAllowedSignersSize = 4 << 20

// AllowedSigners is the set of keys trusted to sign peer books, read from an
// OpenSSH allowed_signers file. Its zero value trusts nobody. It is
// immutable once loaded and safe for concurrent use.
type AllowedSigners struct {
	source  string
	entries []allowedEntry
}

type allowedEntry struct {
	line       int
	principals string
	key        ssh.PublicKey
	keyBytes   []byte
	namespaces string // pattern list; "" means any namespace
	validAfter time.Time
	validUntil time.Time
}

// LoadAllowedSigners reads an OpenSSH allowed_signers file (ssh-keygen(1),
// ALLOWED SIGNERS). Each line is
//
//	principal[,principal...] [options] keytype base64-key [comment]
//
// with the options namespaces="LIST", valid-after="TIME" and
// valid-before="TIME"; lines whose namespaces do not match "wgmesh-peerbook"
// are never used for books. cert-authority lines are refused: certificate
// signatures are not supported. Every bad line is reported as FILE:LINE.
func LoadAllowedSigners(path string) (*AllowedSigners, error) {
	data, err := fileutil.ReadFileLimit(path, maxAllowedSignersSize)
	if err != nil {
		return nil, fmt.Errorf("reading allowed signers: %w", err)
	}
	return ParseAllowedSigners(path, data)
}

// ParseAllowedSigners is LoadAllowedSigners for data already in memory;
// name is used in messages.
func ParseAllowedSigners(name string, data []byte) (*AllowedSigners, error) {
	a := &AllowedSigners{source: name}
	var problems []string
	for i, line := range strings.Split(string(data), "\n") {
		e, err := parseAllowedLine(line)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: %v", name, i+1, err))
			continue
		}
		if e == nil {
			continue
		}
		e.line = i + 1
		a.entries = append(a.entries, *e)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	if len(a.entries) == 0 {
		return nil, fmt.Errorf("%s: no signers listed (want lines like: admin@example.com ssh-ed25519 AAAA...)", name)
	}
	return a, nil
}

// Len reports how many keys are listed.
func (a *AllowedSigners) Len() int { return len(a.entries) }

// Verify checks armoredSig, a detached signature of data, and returns the
// principals of the allowed signer that made it, as written in the file
// (for example "admin@example.com"). The error wraps ErrNoSignature,
// ErrMalformed, ErrNamespace, ErrBadSignature or ErrUnknownSigner.
func (a *AllowedSigners) Verify(data, armoredSig []byte) (principal string, err error) {
	return a.verifyAt(data, armoredSig, time.Now())
}

func (a *AllowedSigners) verifyAt(data, armoredSig []byte, now time.Time) (string, error) {
	sig, err := parseSignature(armoredSig)
	if err != nil {
		return "", err
	}
	if err := sig.verify(data); err != nil {
		return "", err
	}
	if _, ok := sig.publicKey.(*ssh.Certificate); ok {
		return "", fmt.Errorf("%w: signed with a certificate (%s); certificate signers are not supported", ErrUnknownSigner, ssh.FingerprintSHA256(sig.publicKey))
	}
	keyBytes := sig.publicKey.Marshal()
	fp := ssh.FingerprintSHA256(sig.publicKey)
	var reasons []string
	for _, e := range a.entries {
		if !bytes.Equal(e.keyBytes, keyBytes) {
			continue
		}
		where := a.source + ":" + strconv.Itoa(e.line)
		switch {
		case e.namespaces != "" && !matchPatternList(Namespace, e.namespaces):
			reasons = append(reasons, fmt.Sprintf("%s: %s may sign only namespaces %q", where, e.principals, e.namespaces))
		case !e.validAfter.IsZero() && now.Before(e.validAfter):
			reasons = append(reasons, fmt.Sprintf("%s: %s is valid only after %s", where, e.principals, e.validAfter.Format(time.RFC3339)))
		case !e.validUntil.IsZero() && now.After(e.validUntil):
			reasons = append(reasons, fmt.Sprintf("%s: %s expired on %s", where, e.principals, e.validUntil.Format(time.RFC3339)))
		default:
			return e.principals, nil
		}
	}
	if len(reasons) > 0 {
		return "", fmt.Errorf("%w: key %s: %s", ErrUnknownSigner, fp, strings.Join(reasons, "; "))
	}
	return "", fmt.Errorf("%w: key %s %s is not in %s", ErrUnknownSigner, sig.publicKey.Type(), fp, a.source)
}

// parseAllowedLine parses one line; it returns nil, nil for blank lines and
// comments.
func parseAllowedLine(line string) (*allowedEntry, error) {
	line = strings.TrimRight(line, "\r")
	rest := strings.TrimLeft(line, " \t")
	if rest == "" || rest[0] == '#' {
		return nil, nil
	}
	if !utf8.ValidString(rest) {
		return nil, errors.New("not valid UTF-8")
	}
	principals, rest, err := nextField(rest)
	if err != nil {
		return nil, err
	}
	principals = strings.Trim(principals, `"`)
	if rest == "" {
		return nil, errors.New("missing key (want: principal[,principal] [options] keytype base64-key [comment])")
	}
	e := &allowedEntry{principals: principals}

	// Like OpenSSH: if what follows the principals is not a key, it is the
	// option list.
	key, ok := parseKey(rest)
	if !ok && looksLikeKeyType(rest) {
		return nil, errors.New("invalid public key (want: keytype base64-key, as in a .pub file)")
	}
	if !ok {
		var opts string
		opts, rest, err = nextField(rest)
		if err != nil {
			return nil, err
		}
		if err := e.setOptions(opts); err != nil {
			return nil, err
		}
		if rest == "" {
			return nil, errors.New("missing key after the options")
		}
		if key, ok = parseKey(rest); !ok {
			return nil, errors.New("invalid public key (want: keytype base64-key, as in a .pub file)")
		}
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, errors.New("certificates are not supported in allowed signers; list the plain public key")
	}
	e.key = key
	e.keyBytes = key.Marshal()
	return e, nil
}

func parseKey(s string) (ssh.PublicKey, bool) {
	typ, rest, err := nextField(s)
	if err != nil || rest == "" {
		return nil, false
	}
	b64, _, _ := nextField(rest)
	// ParseAuthorizedKey accepts "keytype base64 [comment]" and checks that
	// the type matches the key inside.
	key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(typ + " " + b64))
	if err != nil || len(opts) > 0 {
		return nil, false
	}
	return key, true
}

func looksLikeKeyType(s string) bool {
	for _, p := range []string{"ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// nextField splits off the next whitespace-separated field, honouring
// double quotes (option values may contain spaces).
func nextField(s string) (field, rest string, err error) {
	inQuote := false
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			inQuote = !inQuote
		} else if c == '\\' && inQuote && i+1 < len(s) {
			i++
		} else if (c == ' ' || c == '\t') && !inQuote {
			break
		}
	}
	if inQuote {
		return "", "", errors.New("unterminated quote")
	}
	return s[:i], strings.TrimLeft(s[i:], " \t"), nil
}

func (e *allowedEntry) setOptions(opts string) error {
	for _, opt := range splitOptions(opts) {
		name, value, hasValue := strings.Cut(opt, "=")
		if hasValue {
			if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
				return fmt.Errorf("option %s: value must be in double quotes", name)
			}
			value = strings.ReplaceAll(value[1:len(value)-1], `\"`, `"`)
		}
		switch strings.ToLower(name) {
		case "cert-authority":
			return errors.New("cert-authority is not supported: list the signers' own public keys")
		case "namespaces":
			if !hasValue || value == "" {
				return errors.New(`namespaces needs a value, as in namespaces="wgmesh-peerbook"`)
			}
			e.namespaces = value
		case "valid-after", "valid-before":
			if !hasValue {
				return fmt.Errorf("%s needs a value, as in %s=\"20260101\"", name, name)
			}
			t, err := parseOpenSSHTime(value)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if strings.EqualFold(name, "valid-after") {
				e.validAfter = t
			} else {
				e.validUntil = t
			}
		default:
			return fmt.Errorf("unsupported option %q (supported: namespaces, valid-after, valid-before)", name)
		}
	}
	return nil
}

// splitOptions splits a comma-separated option list, keeping commas inside
// quotes.
func splitOptions(s string) []string {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// parseOpenSSHTime reads YYYYMMDD[HHMM[SS]] with an optional Z suffix for
// UTC (local time otherwise), as ssh-keygen does.
func parseOpenSSHTime(s string) (time.Time, error) {
	loc := time.Local
	if v, ok := strings.CutSuffix(s, "Z"); ok {
		s, loc = v, time.UTC
	} else if v, ok := strings.CutSuffix(s, "z"); ok {
		s, loc = v, time.UTC
	}
	var layout string
	switch len(s) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("bad time %q (want YYYYMMDD[HHMM[SS]][Z])", s)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q (want YYYYMMDD[HHMM[SS]][Z])", s)
	}
	return t, nil
}

// matchPatternList follows OpenSSH's match_pattern_list: comma-separated
// patterns with * and ?, a leading ! negates; any negated match refuses.
func matchPatternList(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		// path.Match knows * and ?, and also [...]; OpenSSH has no
		// classes, so a pattern with '[' is compared literally.
		ok := p == s
		if !ok && !strings.ContainsAny(p, "[\\") {
			ok, _ = path.Match(p, s)
		}
		if ok {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}
