package ui

import (
	"context"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Store is where the page reads and changes the book. FileStore keeps it in
// a file; a book kept elsewhere (an etcd prefix) plugs in with the same two
// methods.
type Store interface {
	// Load returns the current book.
	Load(ctx context.Context) (*peerbook.Book, error)
	// Update applies change to the current book and stores the result as
	// one atomic step: validated as a whole, serial raised (the peerbook
	// membership functions do that), signed when the store signs. A
	// refused change leaves the book as it was. It returns the stored book.
	Update(ctx context.Context, change func(*peerbook.Book) (*peerbook.Book, error)) (*peerbook.Book, error)
}

// FileStore is a book file, changed with the code of `wgmesh book add`,
// `remove` and `set` (package bookedit): under a lock, written atomically,
// its signature last.
type FileStore struct {
	// Path of the book file. It must exist: the page changes a mesh, it
	// does not start one.
	Path string
	// Signer, if not nil, signs every change (Path.sig). nil: changes of a
	// signed book are refused, wrapping bookedit.ErrNeedsSigner.
	Signer ssh.Signer
	// Note, if not nil, receives remarks such as a book rewritten in
	// canonical form.
	Note func(string)
}

// Load implements Store.
func (f *FileStore) Load(context.Context) (*peerbook.Book, error) {
	return bookedit.Load(f.Path)
}

// Update implements Store.
func (f *FileStore) Update(_ context.Context, change func(*peerbook.Book) (*peerbook.Book, error)) (*peerbook.Book, error) {
	res, err := bookedit.Apply(bookedit.Edit{Path: f.Path, Signer: f.Signer, Change: change, Note: f.Note})
	if err != nil {
		return nil, err
	}
	return res.Book, nil
}
