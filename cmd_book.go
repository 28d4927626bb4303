package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

func (e *env) bookCommand() *cli.Command {
	return &cli.Command{
		Name:   "book",
		Usage:  "work with peer books",
		Action: unknownCommand,
		Subcommands: withEtcdFlags(append(append([]*cli.Command{
			{
				Name:      "check",
				Usage:     "validate a peer book; print every problem as FILE:LINE: message",
				ArgsUsage: "FILE",
				Action:    e.bookCheck,
			},
			{
				Name:      "export",
				Usage:     "print the wg-quick config of a member that runs plain WireGuard",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "peer", Usage: "member `NAME` to export (required)"},
					&cli.StringFlag{Name: "key", Usage: "fill in PrivateKey from `FILE` (mode 0600); without it the line is left to fill in"},
					&cli.BoolFlag{Name: "qr", Usage: "show the config as a QR code for the WireGuard phone apps (UTF-8 half blocks)"},
					&cli.StringFlag{Name: "png", Usage: "with --qr: write the QR code to `FILE` as a PNG (mode 0600, never overwriting)"},
				},
				Action: e.bookExport,
			},
			{
				Name:      "import",
				Usage:     "make a peer book from the wg-quick configs of an existing WireGuard network",
				ArgsUsage: "FILE.conf...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "write the book to `FILE` (never overwriting) instead of printing it"},
				},
				Action: e.bookImport,
			},
			{
				Name:      "sign",
				Usage:     "sign a peer book with an SSH key; writes FILE.sig (as ssh-keygen -Y sign -n " + booksign.Namespace + " does)",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "SSH private key `FILE` (ed25519, ECDSA or RSA; unencrypted, mode 0600) (required)"},
				},
				Action: e.bookSign,
			},
			{
				Name:      "verify",
				Usage:     "check FILE.sig against an allowed_signers file",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "trusted-signers", Usage: "OpenSSH allowed_signers `FILE` (required)"},
				},
				Action: e.bookVerify,
			},
		}, e.bookMemberCommands()...), e.bookEtcdCommands()...)),
	}
}

func (e *env) bookCheck(c *cli.Context) error {
	a, err := args(c, "FILE")
	if err != nil {
		return err
	}
	book, err := e.loadAnyBook(c, a[0])
	if err != nil {
		return err
	}
	rules := ""
	switch n := len(book.Rules); {
	case n == 1:
		rules = ", 1 access rule"
	case n > 1:
		// Only books with rules say so: scripts read the line of the others.
		rules = fmt.Sprintf(", %d access rules", n)
	}
	_, err = fmt.Fprintf(e.stdout, "%s: ok, %d members, serial %d%s\n", a[0], len(book.Peers), book.Serial, rules)
	return err
}

// loadBook loads and validates a book; a refused book's error lists every
// problem on its own line.
func loadBook(path string) (*peerbook.Book, error) {
	book, err := peerbook.Load(path)
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return nil, fmt.Errorf("peer book %s refused, %s:\n%w", path, plural(len(perr.Problems), "problem"), err)
	}
	return book, err
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (e *env) bookExport(c *cli.Context) error {
	a, err := args(c, "FILE")
	if err != nil {
		return err
	}
	name, err := requiredFlag(c, "peer", "NAME")
	if err != nil {
		return err
	}
	book, err := e.loadAnyBook(c, a[0])
	if err != nil {
		return err
	}
	var priv *peerbook.PrivateKey
	if path := c.String("key"); path != "" {
		k, err := peerbook.ReadKeyFile(path)
		if err != nil {
			return err
		}
		priv = &k
	}
	conf, err := peerbook.ExportWGQuick(book, name, priv)
	if err != nil {
		return err
	}
	if c.Bool("qr") || c.IsSet("png") {
		return e.exportQR(c, name, conf, priv != nil)
	}
	_, err = e.stdout.Write(conf)
	return err
}

func (e *env) bookImport(c *cli.Context) error {
	if c.NArg() == 0 {
		return usagef("usage: %s [--out FILE] FILE.conf... (got no files)", c.Command.HelpName)
	}
	var files []peerbook.WGQuickFile
	for _, path := range c.Args().Slice() {
		data, err := fileutil.ReadFileLimit(path, peerbook.MaxWGQuickSize)
		if err != nil {
			return err
		}
		files = append(files, peerbook.WGQuickFile{Name: path, Data: data})
	}
	im, err := peerbook.ImportWGQuick(files)
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return fmt.Errorf("cannot import, %s:\n%w", plural(len(perr.Problems), "problem"), err)
	}
	if err != nil {
		return err
	}
	for _, n := range im.Notes {
		fmt.Fprintln(e.stderr, "note: "+n)
	}
	out := c.String("out")
	if out == "" {
		_, err = e.stdout.Write(im.TOML)
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite it", out)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(im.TOML); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(out)
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s: %d members, serial %d\n", out, len(im.Book.Peers), im.Book.Serial)
	return err
}

func (e *env) bookSign(c *cli.Context) error {
	a, err := args(c, "FILE")
	if err != nil {
		return err
	}
	keyPath, err := requiredFlag(c, "key", "SSH_PRIVATE_KEY")
	if err != nil {
		return err
	}
	signer, err := booksign.LoadSigner(keyPath)
	if err != nil {
		return err
	}
	path := a[0]
	data, err := fileutil.ReadFileLimit(path, peerbook.MaxSize)
	if err != nil {
		return err
	}
	// Signing a book that no node would accept helps nobody.
	book, err := peerbook.Parse(path, data)
	var perr *peerbook.Error
	if errors.As(err, &perr) {
		return fmt.Errorf("peer book %s refused, not signed, %s:\n%w", path, plural(len(perr.Problems), "problem"), err)
	}
	if err != nil {
		return err
	}
	sig, err := booksign.Sign(signer, data)
	if err != nil {
		return err
	}
	sigPath := path + ".sig"
	if err := fileutil.WriteFileAtomic(sigPath, sig, 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s: signed serial %d with %s %s\n", sigPath, book.Serial,
		signer.PublicKey().Type(), ssh.FingerprintSHA256(signer.PublicKey()))
	return err
}

func (e *env) bookVerify(c *cli.Context) error {
	a, err := args(c, "FILE")
	if err != nil {
		return err
	}
	signersPath, err := requiredFlag(c, "trusted-signers", "FILE")
	if err != nil {
		return err
	}
	trusted, err := booksign.LoadAllowedSigners(signersPath)
	if err != nil {
		return err
	}
	path := a[0]
	data, err := fileutil.ReadFileLimit(path, peerbook.MaxSize)
	if err != nil {
		return err
	}
	sig, err := fileutil.ReadFileLimit(path+".sig", booksign.MaxSigSize)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: unsigned: %s.sig does not exist (sign with: wgmesh book sign --key KEY %s)", path, path, path)
	}
	if err != nil {
		return err
	}
	principal, err := trusted.Verify(data, sig)
	if err != nil {
		what := "bad signature"
		switch {
		case errors.Is(err, booksign.ErrUnknownSigner):
			what = "unknown signer"
		case errors.Is(err, booksign.ErrNoSignature):
			what = "unsigned"
		}
		return fmt.Errorf("%s: %s: %w", path, what, err)
	}
	book, err := loadBook(path)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s: good signature by %s, serial %d\n", path, principal, book.Serial)
	return err
}
