package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"github.com/wgmesh/wgmesh/config"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// An invitation is one file that holds everything a new machine needs to
// join: its private key, the book (and the URL it follows, if any), the
// book's signature and trusted signers when it is signed, and an expiry.
// It is TOML with the binary parts in base64, so that it survives a paste.

// invitationFormat names the only invitation format this version writes and
// reads.
const invitationFormat = "wgmesh-invitation-1"

// maxInvitation bounds what join reads: a book of peerbook.MaxSize in base64
// and room for the rest.
const maxInvitation = 2*peerbook.MaxSize + 1<<20

type invitation struct {
	Format  string    `toml:"format"`
	Name    string    `toml:"name"`
	Expires time.Time `toml:"expires"`
	// PrivateKey is the new member's key, in wg genkey format.
	PrivateKey string `toml:"private_key,omitempty"`
	// BookURL is where the member follows the book, when it is published.
	BookURL string `toml:"book_url,omitempty"`
	// Book, BookSig and TrustedSigners are base64 of the files' bytes.
	Book           string `toml:"book,omitempty"`
	BookSig        string `toml:"book_sig,omitempty"`
	TrustedSigners string `toml:"trusted_signers,omitempty"`
	// Token, for a book in etcd, is the secret that adds the member
	// once (instead of PrivateKey and Book).
	Token string `toml:"token,omitempty"`
}

func (e *env) inviteCommand() *cli.Command {
	return &cli.Command{
		Name:      "invite",
		Usage:     "add a member with a new key to a book and write its invitation file for `wgmesh join`",
		ArgsUsage: "BOOK",
		Flags: append(append(memberFlags(),
			&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, Usage: "the invitation expires after `DURATION`"},
			&cli.StringFlag{Name: "out", Usage: "write the invitation to `FILE` (mode 0600, never overwriting; default NAME.invite)"},
			&cli.StringFlag{Name: "book-url", Usage: "the member follows the book at `URL` (where you publish BOOK) instead of a copy"},
			&cli.StringFlag{Name: "trusted-signers", Usage: "allowed_signers `FILE` the member trusts for a signed book (default: the --sign-key alone)"},
		), inviteEtcdFlags()...),
		Action: e.invite,
	}
}

func (e *env) joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "set this machine up from an invitation file (- reads it from stdin); prints the wgmesh up command to run",
		ArgsUsage: "INVITATION",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "`DIR` for node.key, book.toml and the book's signature and signers (created 0700) (required)"},
		}, inviteEtcdFlags()...),
		Action: e.join,
	}
}

func (e *env) invite(c *cli.Context) error {
	a, err := args(c, "BOOK")
	if err != nil {
		return err
	}
	m, err := parseMember(c)
	if err != nil {
		return err
	}
	ttl := c.Duration("ttl")
	if ttl <= 0 {
		return usagef("--ttl %v: give a duration above zero, e.g. 24h", ttl)
	}
	out := c.String("out")
	if out == "" {
		out = m.Name + ".invite"
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite it (remove it first or choose another --out)", out)
	}
	if etcdbook.IsURL(a[0]) {
		return e.inviteEtcd(c, a[0], m, ttl, out)
	}
	bookURL := c.String("book-url")
	if bookURL != "" {
		u, err := url.Parse(bookURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.ContainsAny(bookURL, " \t\r\n") {
			return fmt.Errorf("--book-url %q is not an https:// (or http://) URL", bookURL)
		}
	}
	var signers []byte
	if path := c.String("trusted-signers"); path != "" {
		if signers, err = readBookFile(path); err != nil {
			return err
		}
		if _, err := booksign.ParseAllowedSigners(path, signers); err != nil {
			return err
		}
	}
	priv, err := peerbook.GeneratePrivateKey()
	if err != nil {
		return err
	}
	m.PublicKey = priv.Public()
	expires := time.Now().Add(ttl).UTC().Truncate(time.Second)

	ed := &bookEdit{path: a[0], signKey: c.String("sign-key"),
		change: func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.AddMember(b, m) }}
	ed.hook = func(nb *peerbook.Book, text, sig []byte) (func(), error) {
		inv := invitation{
			Format:     invitationFormat,
			Name:       m.Name,
			Expires:    expires,
			PrivateKey: priv.Encode(),
			BookURL:    bookURL,
			Book:       base64.StdEncoding.EncodeToString(text),
		}
		if sig != nil {
			if signers == nil {
				signers = []byte("wgmesh-admin namespaces=\"" + booksign.Namespace + "\" " +
					strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed.signer.PublicKey()))) + "\n")
			}
			trusted, err := booksign.ParseAllowedSigners("trusted signers", signers)
			if err != nil {
				return nil, err
			}
			if _, err := trusted.Verify(text, sig); err != nil {
				return nil, fmt.Errorf("the trusted signers would refuse the book signed with --sign-key (%w); give a --trusted-signers file that lists that key", err)
			}
			inv.BookSig = base64.StdEncoding.EncodeToString(sig)
			inv.TrustedSigners = base64.StdEncoding.EncodeToString(signers)
		}
		body, err := toml.Marshal(inv)
		if err != nil {
			return nil, err
		}
		head := fmt.Sprintf("# wgmesh invitation for member %q, expires %s.\n"+
			"# It holds the member's PRIVATE KEY: give it to that machine only, over a\n"+
			"# channel you trust, and delete it there after: wgmesh join --out DIR FILE\n",
			m.Name, expires.Format(time.RFC3339))
		if err := fileutil.WriteFileExclusive(out, append([]byte(head), body...), 0o600); err != nil {
			return nil, err
		}
		return func() { os.Remove(out) }, nil
	}
	nb, err := e.runEdit(ed)
	if err != nil {
		return err
	}
	p, _ := nb.PeerByName(m.Name)
	fmt.Fprintf(e.stdout, "%s: added %s: %s\n", a[0], p.Name, joinAddrs(p.Addresses))
	fmt.Fprintf(e.stdout, "%s: invitation for %s, expires %s; on the new machine run: wgmesh join --out DIR %s\n",
		out, p.Name, expires.Format(time.RFC3339), filepath.Base(out))
	return e.printEdited(ed, nb)
}

func (e *env) join(c *cli.Context) error {
	a, err := args(c, "INVITATION")
	if err != nil {
		return err
	}
	dir, err := requiredFlag(c, "out", "DIR")
	if err != nil {
		return err
	}
	var data []byte
	if a[0] == "-" {
		data, err = io.ReadAll(io.LimitReader(e.stdin, maxInvitation+1))
	} else {
		data, err = fileutil.ReadFileLimit(a[0], maxInvitation)
	}
	if err != nil {
		return err
	}
	if len(data) > maxInvitation {
		return fmt.Errorf("%s is not an invitation: over %d bytes", a[0], maxInvitation)
	}
	var inv invitation
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&inv); err != nil || inv.Format != invitationFormat {
		if err == nil {
			err = fmt.Errorf("format %q, want %q", inv.Format, invitationFormat)
		}
		return fmt.Errorf("%s is not a wgmesh invitation: %v", a[0], err)
	}
	if now := time.Now(); now.After(inv.Expires) {
		return fmt.Errorf("invitation expired at %s; ask for a new one (wgmesh invite --name %s BOOK)", inv.Expires.Format(time.RFC3339), inv.Name)
	}
	if inv.Token != "" {
		return e.joinEtcd(c, a[0], inv, dir)
	}
	key, err := peerbook.ParsePrivateKey(inv.PrivateKey)
	if err != nil {
		return fmt.Errorf("%s: private_key: %w", a[0], err)
	}
	decode := func(what, s string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not base64: %w", a[0], what, err)
		}
		return b, nil
	}
	text, err := decode("book", inv.Book)
	if err != nil {
		return err
	}
	book, err := peerbook.Parse("book.toml", text)
	if err != nil {
		return fmt.Errorf("%s: the book in it is refused:\n%w", a[0], err)
	}
	self, ok := book.PeerByKey(key.Public())
	if !ok || !strings.EqualFold(self.Name, inv.Name) {
		return fmt.Errorf("%s: the book in it has no member %q with this invitation's key", a[0], inv.Name)
	}
	var sig, signers []byte
	if inv.BookSig != "" {
		if sig, err = decode("book_sig", inv.BookSig); err != nil {
			return err
		}
		if signers, err = decode("trusted_signers", inv.TrustedSigners); err != nil {
			return err
		}
		trusted, err := booksign.ParseAllowedSigners("trusted signers", signers)
		if err != nil {
			return fmt.Errorf("%s: %w", a[0], err)
		}
		if _, err := trusted.Verify(text, sig); err != nil {
			return fmt.Errorf("%s: the book's signature does not verify: %w", a[0], err)
		}
	}

	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	keyPath := filepath.Join(dir, "node.key")
	bookPath := filepath.Join(dir, "book.toml")
	sigPath := bookPath + ".sig"
	signersPath := filepath.Join(dir, "allowed_signers")
	configPath := filepath.Join(dir, "wgmesh.toml")
	files := []string{keyPath, configPath}
	if inv.BookURL == "" {
		files = append(files, bookPath)
		if sig != nil {
			files = append(files, sigPath)
		}
	}
	if sig != nil {
		files = append(files, signersPath)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists; this machine has joined already, or choose another --out", f)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var written []string
	undo := func(err error) error {
		for _, f := range written {
			os.Remove(f)
		}
		return err
	}
	if err := peerbook.WriteKeyFile(keyPath, key); err != nil {
		return err
	}
	written = append(written, keyPath)
	write := func(path string, data []byte) error {
		if err := fileutil.WriteFileExclusive(path, data, 0o644); err != nil {
			return err
		}
		written = append(written, path)
		return nil
	}
	if inv.BookURL == "" {
		if err := write(bookPath, text); err != nil {
			return undo(err)
		}
		if sig != nil {
			if err := write(sigPath, sig); err != nil {
				return undo(err)
			}
		}
	}
	if sig != nil {
		if err := write(signersPath, signers); err != nil {
			return undo(err)
		}
	}

	// The same settings twice: as a config file (what a service unit
	// runs) and spelled out as flags.
	conf := &config.File{Book: bookPath, Key: keyPath}
	cmd := []string{"wgmesh", "up", "--book", bookPath, "--key", keyPath}
	if inv.BookURL != "" {
		conf.Book, cmd[3] = inv.BookURL, inv.BookURL
	}
	if sig != nil {
		conf.TrustedSigners = signersPath
		cmd = append(cmd, "--trusted-signers", signersPath)
	}
	if err := config.Write(configPath, conf); err != nil {
		return undo(err)
	}
	for i := range cmd {
		cmd[i] = shellQuote(cmd[i])
	}
	fmt.Fprintf(e.stdout, "joined as %s: %s (book serial %d, %d members)\n", self.Name, joinAddrs(self.Addresses), book.Serial, len(book.Peers))
	fmt.Fprintf(e.stdout, "wrote %s\n", strings.Join(files, ", "))
	if a[0] != "-" {
		fmt.Fprintf(e.stdout, "delete %s now: it holds this machine's private key\n", a[0])
	}
	fmt.Fprintf(e.stdout, "start the node with:\n  wgmesh up --config %s\nwhich is the same as:\n  %s\n", shellQuote(configPath), strings.Join(cmd, " "))
	return nil
}

// shellQuote quotes s for a POSIX shell where it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
