// Package bookedit changes a peer book file the one way every front end
// (book add/remove/set, invite, the web page) does it: under a lock, by one
// pure operation of peerbook, checked with the validator of `book check`,
// signed when asked, and written atomically (book first, signature last),
// so that a refused change leaves the file byte for byte as it was and
// concurrent changes never lose one another.
package bookedit

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// DefaultLockWait bounds how long a change waits for another one on the
// same book.
const DefaultLockWait = 30 * time.Second

// SigSuffix is appended to a book's path to find its detached signature.
const SigSuffix = ".sig"

// ErrNeedsSigner is wrapped by the error of an unsigned change to a book
// that has a signature file: every node with trusted signers would refuse
// the result.
var ErrNeedsSigner = errors.New("the book is signed but no signing key was given")

// ErrNotExist is wrapped by the error of a change to a book file that does
// not exist when Edit.New is nil.
var ErrNotExist = errors.New("peer book does not exist")

// Hook runs once the new book is known and valid, before it is written,
// with the new book's text and signature (nil when unsigned): to write a
// key or an invitation that must exist when the book names the member.
// undo reverses it if the book cannot be written after all.
type Hook func(nb *peerbook.Book, text, sig []byte) (undo func(), err error)

// Edit is one change of a book file.
type Edit struct {
	// Path is the book file.
	Path string
	// Signer, if not nil, signs the changed book into Path+SigSuffix. nil:
	// the change is refused (ErrNeedsSigner) when that file exists.
	Signer ssh.Signer
	// Change is the operation, typically a peerbook membership function.
	// Its errors are returned wrapped; the book is then unchanged.
	Change func(*peerbook.Book) (*peerbook.Book, error)
	// Hook, if not nil, runs before the write (see Hook).
	Hook Hook
	// New, if not nil, is the empty book that Change starts from when Path
	// does not exist; the result is then created (never overwriting a file
	// that appeared meanwhile). nil: a missing book is ErrNotExist.
	New *peerbook.Book
	// LockWait bounds the wait for the book's lock; 0 means
	// DefaultLockWait.
	LockWait time.Duration
	// Note, if not nil, receives remarks for the user, such as a book
	// rewritten in canonical form because its layout allows no edit in
	// place.
	Note func(string)
}

// Result is what a successful Apply did.
type Result struct {
	// Book is the new book, as a node parses it.
	Book *peerbook.Book
	// Signed is set when Path+SigSuffix was written.
	Signed bool
}

// Load reads and parses the book file at path, limited to peerbook.MaxSize
// bytes; a FIFO or device is refused rather than read.
func Load(path string) (*peerbook.Book, error) {
	data, err := fileutil.ReadFileLimit(path, peerbook.MaxSize)
	if err != nil {
		return nil, err
	}
	return peerbook.Parse(path, data)
}

// Apply applies ed and returns the new book.
func Apply(ed Edit) (*Result, error) {
	if ed.Change == nil {
		return nil, errors.New("bookedit: no change")
	}
	if _, err := os.Stat(ed.Path); errors.Is(err, fs.ErrNotExist) {
		if ed.New == nil {
			return nil, fmt.Errorf("peer book %s: %w", ed.Path, ErrNotExist)
		}
		return create(ed)
	}
	wait := ed.LockWait
	if wait == 0 {
		wait = DefaultLockWait
	}
	unlock, err := fileutil.LockFile(ed.Path, wait)
	if err != nil {
		return nil, err
	}
	defer unlock()

	data, err := fileutil.ReadFileLimit(ed.Path, peerbook.MaxSize)
	if err != nil {
		return nil, err
	}
	ob, err := peerbook.Parse(ed.Path, data)
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return nil, fmt.Errorf("peer book %s refused, not changed, %s (fix them first):\n%w", ed.Path, plural(len(perr.Problems), "problem"), err)
	}
	if err != nil {
		return nil, err
	}
	if ed.Signer == nil {
		if _, err := os.Stat(ed.Path + SigSuffix); err == nil {
			return nil, fmt.Errorf("%s is signed (%s%s exists): %w", ed.Path, ed.Path, SigSuffix, ErrNeedsSigner)
		}
	}
	nb, err := ed.Change(ob)
	if err != nil {
		return nil, Refused(ed.Path, err)
	}
	text, inPlace := peerbook.EditText(data, ob, nb)
	if !inPlace && !bytes.Equal(data, peerbook.Marshal(ob)) && ed.Note != nil {
		ed.Note(fmt.Sprintf("%s is written whole in canonical form: its layout (inline tables, sub-tables of members) allows no edit in place, so its comments and layout are gone", ed.Path))
	}
	return write(ed, text, func() error {
		// Compare and swap against writers that take no lock (an editor):
		// their change is never silently overwritten.
		now, err := fileutil.ReadFileLimit(ed.Path, peerbook.MaxSize)
		if err != nil {
			return err
		}
		if !bytes.Equal(now, data) {
			return fmt.Errorf("%s changed while it was being edited (by a program that takes no lock); not changed, try again", ed.Path)
		}
		return fileutil.WriteFileAtomic(ed.Path, text, 0o644)
	})
}

// create starts a new book whose first member the change adds.
func create(ed Edit) (*Result, error) {
	empty := *ed.New
	empty.Source = ed.Path
	nb, err := ed.Change(&empty)
	if err != nil {
		return nil, Refused(ed.Path, err)
	}
	text := peerbook.Marshal(nb)
	return write(ed, text, func() error { return fileutil.WriteFileExclusive(ed.Path, text, 0o644) })
}

// write validates text as `book check` would, signs it, runs the hook and
// writes the book with writeBook, then the signature.
func write(ed Edit, text []byte, writeBook func() error) (*Result, error) {
	nb, err := peerbook.Parse(ed.Path, text)
	if err != nil {
		return nil, fmt.Errorf("%s not changed: the changed book would be refused:\n%w", ed.Path, err)
	}
	var sig []byte
	if ed.Signer != nil {
		if sig, err = booksign.Sign(ed.Signer, text); err != nil {
			return nil, err
		}
	}
	undo := func() {}
	if ed.Hook != nil {
		if undo, err = ed.Hook(nb, text, sig); err != nil {
			return nil, fmt.Errorf("%s not changed: %w", ed.Path, err)
		}
	}
	if err := writeBook(); err != nil {
		undo()
		return nil, err
	}
	res := &Result{Book: nb}
	// Book first, signature last: a node that sees the new book with the
	// old signature refuses it for a moment, never the other way round.
	if sig != nil {
		if err := fileutil.WriteFileAtomic(ed.Path+SigSuffix, sig, 0o644); err != nil {
			return nil, fmt.Errorf("%s changed but not signed: %w; sign it with: wgmesh book sign --key KEY %s", ed.Path, err, ed.Path)
		}
		res.Signed = true
	}
	return res, nil
}

// Refused wraps the error of a membership operation on the book at path
// (unchanged): a refused book lists each problem on its own line.
func Refused(path string, err error) error {
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return fmt.Errorf("%s not changed: the changed book would be refused, %s:\n%w", path, plural(len(perr.Problems), "problem"), err)
	}
	return fmt.Errorf("%s not changed: %w", path, err)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
