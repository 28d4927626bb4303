// Package booksource delivers the peer book to a running node: from a file
// that is watched for changes, or from an HTTPS URL that is polled. Every
// version is parsed and validated (and, with trusted signers, its detached
// SSH signature verified and its serial checked) before it is handed over;
// a refused version is reported with its reason and the caller keeps
// running the last good book.
//
// # Usage
//
//	first, updates, err := booksource.WatchFile(ctx, "/etc/wgmesh/book.toml", sighup, booksource.Options{
//		TrustedSigners: signers, // nil: signatures not required
//		StateDir:       "/var/lib/wgmesh",
//		Logger:         logger,
//	})
//	if err != nil { ... } // no usable book at start
//	node.Apply(first.Book)
//	for u := range updates { // closed when ctx is done
//		if u.Err != nil {
//			logger.Error("book refused; keeping the running one", "err", u.Err)
//			continue
//		}
//		node.Apply(u.Book)
//	}
//
// PollURL is used the same way for an https:// book.
//
// # Signatures and rollback
//
// With Options.TrustedSigners set, a book is accepted only with a valid
// signature (FILE.sig, URL.sig) by an allowed signer, and only if its serial
// is at least the highest serial ever accepted; the same serial is accepted
// only with byte-identical content (so a restart with the running book
// works, while a changed book that forgot to raise its serial is refused).
// The highest serial is kept in StateDir/serial so the rule survives a
// restart. Without trusted signers no serial is checked or recorded: an
// unsigned book can be rewritten by whoever can write the file or the URL,
// so a rollback check would protect nothing, and an admin may well go back
// to an older book on purpose.
package booksource

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/internal/procs"
	"github.com/wgmesh/wgmesh/peerbook"
)

// SigSuffix is appended to a book's path or URL to find its signature.
const SigSuffix = ".sig"

// Names of the files kept in Options.StateDir.
const (
	SerialFile    = "serial"        // highest accepted serial and its book's SHA-256
	CachedBook    = "book.toml"     // last good remote book
	CachedBookSig = "book.toml.sig" // its signature
)

// maxSerialFile bounds StateDir/serial: a serial and a hex SHA-256.
const maxSerialFile = 4 << 10

// ErrStaleSerial is wrapped by the error of a signed book whose serial is
// lower than the highest serial accepted, or equal to it with different
// content.
var ErrStaleSerial = errors.New("stale serial")

// Update is one version of the book as seen by a source.
type Update struct {
	// Book is the accepted book; nil when Err is set.
	Book *peerbook.Book
	// Err says why this version was refused: read or fetch errors, parse
	// errors (a *peerbook.Error listing every problem), a missing or bad
	// signature (wrapping booksign's errors), or ErrStaleSerial. The caller
	// keeps running its previous book.
	Err error
	// Raw is the book as read, also for a refused version when it could be
	// read at all.
	Raw []byte
	// Sig is the detached signature read with the book; nil when no
	// trusted signers are configured or none was found.
	Sig []byte
	// Signer names the principals of the allowed signer that signed Book.
	Signer string
	// FromCache is set on PollURL's first update when the book came from
	// the cache in StateDir because the server could not be used.
	FromCache bool
}

// Options are shared by all sources.
type Options struct {
	// TrustedSigners, if not nil, makes signatures mandatory: a book is
	// accepted only with a valid signature in the namespace
	// "wgmesh-peerbook" by one of these signers, and only if its serial did
	// not go back (see the package documentation). nil: signatures are not
	// read and serials are not checked.
	TrustedSigners *booksign.AllowedSigners
	// StateDir keeps what must survive a restart: the highest accepted
	// serial (with TrustedSigners) and, for PollURL, the last good book and
	// its signature. It is created (0700) when needed; files in it are
	// written 0600. "": nothing is kept.
	StateDir string
	// Logger receives warnings and debug messages. Refused versions are not
	// logged here but returned in Update.Err for the caller to report.
	// nil: discard.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// gate decides which versions of a book are accepted. It is used by one
// goroutine at a time.
type gate struct {
	name    string // book file or URL, for messages
	sigName string // its signature file or URL
	opts    Options
	log     *slog.Logger

	// Highest accepted serial and the hash of its book (TrustedSigners only).
	haveHighest bool
	highest     uint64
	highestHash [sha256.Size]byte

	current     *peerbook.Book
	currentHash [sha256.Size]byte

	seen     bool
	seenHash [sha256.Size]byte
}

// newGate makes the gate of one source; caches says the source keeps its
// last good book in opts.StateDir. A state dir that will be used is
// checked first: whoever can write it can reset the rollback protection
// or plant a cached book.
func newGate(name, sigName string, opts Options, caches bool) (*gate, error) {
	g := &gate{name: name, sigName: sigName, opts: opts, log: opts.logger()}
	if opts.StateDir == "" || (!caches && !g.signed()) {
		return g, nil
	}
	if err := fileutil.PrivateDir(opts.StateDir, "state directory"); err != nil {
		return nil, &StateError{err}
	}
	if g.signed() {
		if err := g.loadSerial(); err != nil {
			return nil, &StateError{err}
		}
	}
	return g, nil
}

// StateError is returned by WatchFile and PollURL when Options.StateDir,
// or a file in it, cannot be used: the book itself was not looked at.
type StateError struct{ Err error }

func (e *StateError) Error() string { return e.Err.Error() }
func (e *StateError) Unwrap() error { return e.Err }

func (g *gate) signed() bool { return g.opts.TrustedSigners != nil }

// version is what a source read: the book, its signature (nil when absent
// or not wanted) and the error that prevented reading, if any.
type version struct {
	book, sig []byte
	err       error
}

func (v version) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{v.book, v.sig} {
		h.Write(strconv.AppendInt(nil, int64(len(b)), 10))
		h.Write([]byte{':'})
		h.Write(b)
	}
	if v.sig == nil {
		h.Write([]byte("nosig"))
	}
	if v.err != nil {
		h.Write([]byte("err:" + v.err.Error()))
	}
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

// consider checks a version and reports whether it is news: a version
// identical to the last one seen, or an accepted book identical to the
// running one, is not.
func (g *gate) consider(v version) (Update, bool) {
	fp := v.fingerprint()
	if g.seen && fp == g.seenHash {
		return Update{}, false
	}
	g.seen, g.seenHash = true, fp

	u := g.check(v)
	if u.Err != nil {
		return u, true
	}
	h := sha256.Sum256(v.book)
	if g.current != nil && h == g.currentHash {
		// Same book, perhaps re-signed: nothing to apply.
		return Update{}, false
	}
	g.accept(u.Book, h)
	return u, true
}

func (g *gate) check(v version) Update {
	u := Update{Raw: v.book, Sig: v.sig}
	if v.err != nil {
		u.Err = v.err
		return u
	}
	// Parsing and applying a big book is heavy before the CPU clock can
	// show it: a process on one P (internal/procs) gets all of them now.
	procs.Boost(time.Second)
	book, err := peerbook.Parse(g.name, v.book)
	if err != nil {
		u.Err = err
		return u
	}
	if !g.signed() {
		u.Book = book
		return u
	}
	signer, err := g.opts.TrustedSigners.Verify(v.book, v.sig)
	if err != nil {
		if errors.Is(err, booksign.ErrNoSignature) {
			u.Err = fmt.Errorf("%s: %w: the book is not signed; sign it with `wgmesh book sign` or `ssh-keygen -Y sign -n %s`", g.sigName, err, booksign.Namespace)
		} else {
			u.Err = fmt.Errorf("%s: %w", g.sigName, err)
		}
		return u
	}
	if err := g.checkSerial(book, sha256.Sum256(v.book)); err != nil {
		u.Err = err
		return u
	}
	u.Book, u.Signer = book, signer
	return u
}

// checkSerial applies the rollback rule to a signed book whose content
// hashes to h.
func (g *gate) checkSerial(book *peerbook.Book, h [sha256.Size]byte) error {
	switch {
	case !g.haveHighest:
	case book.Serial < g.highest:
		return fmt.Errorf("%s: %w: serial %d is lower than %d, the highest applied; refusing a rollback", g.name, ErrStaleSerial, book.Serial, g.highest)
	case book.Serial == g.highest && h != g.highestHash:
		return fmt.Errorf("%s: %w: serial not increased: the book changed but its serial is still %d; raise it and sign again", g.name, ErrStaleSerial, book.Serial)
	}
	return nil
}

func (g *gate) accept(b *peerbook.Book, h [sha256.Size]byte) {
	g.current, g.currentHash = b, h
	if !g.signed() {
		return
	}
	if g.haveHighest && g.highest == b.Serial && g.highestHash == h {
		return
	}
	g.haveHighest, g.highest, g.highestHash = true, b.Serial, h
	if g.opts.StateDir == "" {
		return
	}
	data := fmt.Sprintf("%d %s\n", b.Serial, hex.EncodeToString(h[:]))
	if err := writeFileAtomic(g.opts.StateDir, SerialFile, []byte(data)); err != nil {
		// The book is good and applies; only the rollback protection
		// across a restart is weakened, so say so loudly.
		g.log.Error("cannot record the book serial; a restart may accept an older book", "serial", b.Serial, "err", err)
	}
}

func (g *gate) loadSerial() error {
	path := filepath.Join(g.opts.StateDir, SerialFile)
	data, err := fileutil.ReadFileLimitNoFollow(path, maxSerialFile)
	if errors.Is(err, os.ErrNotExist) {
		// Expected on a node's first start; at any other time someone
		// removed it, and an older signed book would now be accepted.
		g.log.Warn("no book serial recorded in the state directory: rollback protection starts over from the first book accepted now (expected on a node's first start only)", "file", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading book state: %w; wgmesh writes it as a regular file: remove it to reset the rollback protection", err)
	}
	fields := strings.Fields(string(data))
	var serial uint64
	var hash []byte
	if len(fields) == 2 {
		serial, err = strconv.ParseUint(fields[0], 10, 64)
		if err == nil {
			hash, err = hex.DecodeString(fields[1])
		}
	}
	if len(fields) != 2 || err != nil || len(hash) != sha256.Size {
		return fmt.Errorf("%s is damaged (want \"SERIAL SHA256\"); delete it to reset the rollback protection", path)
	}
	g.haveHighest, g.highest = true, serial
	copy(g.highestHash[:], hash)
	return nil
}

// writeFileAtomic replaces dir/name with data (mode 0600) so that a reader
// or a crash sees the old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	if err := fileutil.PrivateDir(dir, "state directory"); err != nil {
		return err
	}
	return fileutil.WriteFileAtomic(filepath.Join(dir, name), data, 0o600)
}
