// Package booksign signs and verifies wgmesh peer books with SSH keys.
//
// A signature is a detached SSHSIG blob (OpenSSH's PROTOCOL.sshsig) in the
// namespace "wgmesh-peerbook", armored exactly as
//
//	ssh-keygen -Y sign -n wgmesh-peerbook -f KEY FILE
//
// writes it, so an admin can sign a book with a key they already have, with
// either ssh-keygen or `wgmesh book sign`, and check it with either
// `ssh-keygen -Y verify` or `wgmesh book verify`. Who may sign is given by an
// OpenSSH allowed_signers file (see ssh-keygen(1), ALLOWED SIGNERS).
//
// # Usage
//
//	signer, err := booksign.LoadSigner("/home/admin/.ssh/id_ed25519")
//	sig, err := booksign.Sign(signer, book)        // write to book.toml.sig
//
//	trusted, err := booksign.LoadAllowedSigners("/etc/wgmesh/allowed_signers")
//	principal, err := trusted.Verify(book, sig)
//	if errors.Is(err, booksign.ErrUnknownSigner) { ... }
//
// The messages of Verify's errors are meant for an operator; the sentinel
// errors (ErrNoSignature, ErrMalformed, ErrNamespace, ErrBadSignature,
// ErrUnknownSigner) tell the cases apart for programs.
package booksign

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Namespace is the SSHSIG namespace of peer book signatures. A signature
// made for another purpose (git commits, files) is never accepted as a book
// signature, and the other way round.
const Namespace = "wgmesh-peerbook"

// Errors returned (wrapped) by AllowedSigners.Verify. Test with errors.Is.
var (
	// ErrNoSignature: the signature is empty.
	ErrNoSignature = errors.New("no signature")
	// ErrMalformed: the signature is not an armored SSHSIG blob that this
	// package can read.
	ErrMalformed = errors.New("malformed signature")
	// ErrNamespace: a valid SSH signature, but made for another purpose.
	ErrNamespace = errors.New("wrong signature namespace")
	// ErrBadSignature: the signature does not match the data; the book or
	// the signature was changed after signing.
	ErrBadSignature = errors.New("signature does not match the data")
	// ErrUnknownSigner: a valid signature by a key that the allowed signers
	// do not trust for peer books.
	ErrUnknownSigner = errors.New("signer is not allowed")
)

// MaxSigSize bounds a signature file; an SSHSIG of an RSA-16384 key is
// under 5 KiB.
const MaxSigSize = 64 << 10

const (
	armorBegin = "-----BEGIN SSH SIGNATURE-----"
	armorEnd   = "-----END SSH SIGNATURE-----"
	// armorWidth is the line width of ssh-keygen's armor (sshbuf_dtob64 with
	// wrap 70), kept so that our output is byte-identical to ssh-keygen's.
	armorWidth = 70
	sigMagic   = "SSHSIG"
	sigVersion = 1
	// signHash is what ssh-keygen uses by default.
	signHash = "sha512"
)

// signature is a parsed SSHSIG blob.
type signature struct {
	publicKey ssh.PublicKey
	namespace string
	hashAlg   string
	sig       *ssh.Signature
}

// Sign signs data in the wgmesh-peerbook namespace and returns the armored
// signature, byte-identical to what ssh-keygen -Y sign would write for the
// same key (ed25519 signatures are deterministic; ECDSA and RSA use fresh
// randomness, as ssh-keygen does). RSA keys sign with rsa-sha2-512.
func Sign(signer ssh.Signer, data []byte) ([]byte, error) {
	return signNamespace(signer, data, Namespace)
}

func signNamespace(signer ssh.Signer, data []byte, namespace string) ([]byte, error) {
	if signer == nil {
		return nil, errors.New("sign: no signer")
	}
	pub := signer.PublicKey()
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, errors.New("sign: certificate keys are not supported; sign with the plain key")
	}
	msg := signedData(namespace, signHash, sha512Sum(data))

	var (
		sig *ssh.Signature
		err error
	)
	if pub.Type() == ssh.KeyAlgoRSA {
		// PROTOCOL.sshsig forbids SHA-1 "ssh-rsa" signatures; ssh-keygen
		// picks rsa-sha2-512.
		as, ok := signer.(ssh.AlgorithmSigner)
		if !ok {
			return nil, errors.New("sign: this RSA signer cannot make rsa-sha2-512 signatures")
		}
		sig, err = as.SignWithAlgorithm(nil, msg, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = signer.Sign(nil, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}

	var blob []byte
	blob = append(blob, sigMagic...)
	blob = binary.BigEndian.AppendUint32(blob, sigVersion)
	blob = appendString(blob, pub.Marshal())
	blob = appendString(blob, []byte(namespace))
	blob = appendString(blob, nil) // reserved
	blob = appendString(blob, []byte(signHash))
	blob = appendString(blob, ssh.Marshal(sig))
	return armor(blob), nil
}

// signedData is the message that is actually signed (PROTOCOL.sshsig): the
// hash of the data, bound to the namespace and hash algorithm.
func signedData(namespace, hashAlg string, digest []byte) []byte {
	var b []byte
	b = append(b, sigMagic...)
	b = appendString(b, []byte(namespace))
	b = appendString(b, nil) // reserved
	b = appendString(b, []byte(hashAlg))
	b = appendString(b, digest)
	return b
}

func sha512Sum(data []byte) []byte {
	s := sha512.Sum512(data)
	return s[:]
}

func digest(hashAlg string, data []byte) ([]byte, bool) {
	var h hash.Hash
	switch hashAlg {
	case "sha512":
		h = sha512.New()
	case "sha256":
		h = sha256.New()
	default:
		return nil, false
	}
	h.Write(data)
	return h.Sum(nil), true
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func armor(blob []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(blob)
	var b bytes.Buffer
	b.WriteString(armorBegin + "\n")
	for len(enc) > armorWidth {
		b.WriteString(enc[:armorWidth])
		b.WriteByte('\n')
		enc = enc[armorWidth:]
	}
	b.WriteString(enc + "\n")
	b.WriteString(armorEnd + "\n")
	return b.Bytes()
}

// unarmor returns the blob inside an armored signature. Like OpenSSH it
// accepts any line width and surrounding whitespace, nothing else.
func unarmor(armored []byte) ([]byte, error) {
	s := strings.TrimSpace(string(armored))
	if !strings.HasPrefix(s, armorBegin) {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformed, armorBegin)
	}
	s = strings.TrimPrefix(s, armorBegin)
	body, ok := strings.CutSuffix(s, armorEnd)
	if !ok {
		return nil, fmt.Errorf("%w: does not end with %q", ErrMalformed, armorEnd)
	}
	body = strings.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', ' ', '\t':
			return -1
		}
		return r
	}, body)
	blob, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64: %v", ErrMalformed, err)
	}
	return blob, nil
}

// parseSignature reads an armored SSHSIG blob. It checks the structure only,
// not the signature itself.
func parseSignature(armored []byte) (*signature, error) {
	if len(bytes.TrimSpace(armored)) == 0 {
		return nil, ErrNoSignature
	}
	blob, err := unarmor(armored)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(blob, []byte(sigMagic)) {
		return nil, fmt.Errorf("%w: no SSHSIG preamble", ErrMalformed)
	}
	r := reader{b: blob[len(sigMagic):]}
	version := r.uint32()
	pubBytes := r.string()
	namespace := r.string()
	r.string() // reserved
	hashAlg := r.string()
	sigBytes := r.string()
	if r.err || len(r.b) != 0 {
		return nil, fmt.Errorf("%w: truncated or trailing data", ErrMalformed)
	}
	if version != sigVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrMalformed, version)
	}
	pub, err := ssh.ParsePublicKey(pubBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(sigBytes, sig); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if h := string(hashAlg); h != "sha256" && h != "sha512" {
		return nil, fmt.Errorf("%w: unsupported hash algorithm %q", ErrMalformed, hashAlg)
	}
	return &signature{publicKey: pub, namespace: string(namespace), hashAlg: string(hashAlg), sig: sig}, nil
}

// verify checks the signature against data and the key it names.
func (s *signature) verify(data []byte) error {
	if s.namespace != Namespace {
		return fmt.Errorf("%w: made for %q, want %q", ErrNamespace, s.namespace, Namespace)
	}
	if s.publicKey.Type() == ssh.KeyAlgoRSA || s.publicKey.Type() == ssh.CertAlgoRSAv01 {
		// SHA-1 RSA signatures are not acceptable (PROTOCOL.sshsig).
		if s.sig.Format != ssh.KeyAlgoRSASHA256 && s.sig.Format != ssh.KeyAlgoRSASHA512 {
			return fmt.Errorf("%w: RSA signature algorithm %q is not allowed", ErrMalformed, s.sig.Format)
		}
	}
	d, _ := digest(s.hashAlg, data)
	if err := s.publicKey.Verify(signedData(s.namespace, s.hashAlg, d), s.sig); err != nil {
		return ErrBadSignature
	}
	return nil
}

// reader reads SSH wire-format fields; a short read sets err.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) uint32() uint32 {
	if len(r.b) < 4 {
		r.err = true
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) string() []byte {
	n := r.uint32()
	if r.err || uint64(n) > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}
