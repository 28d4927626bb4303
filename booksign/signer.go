package booksign

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// maxKeyFileSize bounds what LoadSigner reads; an RSA-16384 private key is
// far smaller.
const maxKeyFileSize = 1 << 20

// LoadSigner reads an unencrypted private key in OpenSSH (or PEM) format, as
// written by ssh-keygen: ed25519, ECDSA and RSA keys. Like ssh, it refuses a
// key file that group or others may read. Passphrase-protected keys are
// refused with an error saying what to do instead; errors never contain key
// material.
func LoadSigner(path string) (ssh.Signer, error) {
	data, err := fileutil.ReadPrivateFile(path, maxKeyFileSize, "reading private key", func(perm fs.FileMode) error {
		if runtime.GOOS == "windows" {
			return nil // Windows' permission bits do not say who may read the file
		}
		return fmt.Errorf("private key %s is readable by others (mode %04o); run: chmod 600 %s", path, perm, path)
	})
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &pm):
			return nil, fmt.Errorf("private key %s is protected by a passphrase, which wgmesh does not read; "+
				"sign with: ssh-keygen -Y sign -n %s -f %s FILE (same signature format)", path, Namespace, path)
		case looksLikePublicKey(data):
			return nil, fmt.Errorf("%s is a public key; give the private key file (without .pub)", path)
		}
		// x/crypto's messages name the problem, never the key bytes.
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return signer, nil
}

func looksLikePublicKey(data []byte) bool {
	s := strings.TrimSpace(string(data))
	if strings.Contains(s, "PUBLIC KEY") {
		return true
	}
	_, _, _, _, err := ssh.ParseAuthorizedKey(data)
	return err == nil
}
