package booksign_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
)

func Example() {
	// An admin's key; in real use booksign.LoadSigner("~/.ssh/id_ed25519").
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)

	book := []byte("format = 1\nserial = 8\n")
	sig, err := booksign.Sign(signer, book) // what `wgmesh book sign` writes to FILE.sig
	if err != nil {
		panic(err)
	}

	// A node trusts the keys in an allowed_signers file.
	allowed, err := booksign.ParseAllowedSigners("allowed_signers",
		[]byte("admin@example.com "+string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	if err != nil {
		panic(err)
	}
	principal, err := allowed.Verify(book, sig)
	fmt.Println(principal, err)

	_, err = allowed.Verify([]byte("format = 1\nserial = 9\n"), sig)
	fmt.Println(errors.Is(err, booksign.ErrBadSignature))
	// Output:
	// admin@example.com <nil>
	// true
}
