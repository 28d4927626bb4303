package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/peerbook"
)

func (e *env) bookCommand() *cli.Command {
	return &cli.Command{
		Name:   "book",
		Usage:  "work with peer books",
		Action: unknownCommand,
		Subcommands: []*cli.Command{
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
				},
				Action: e.bookExport,
			},
		},
	}
}

func (e *env) bookCheck(c *cli.Context) error {
	a, err := args(c, "FILE")
	if err != nil {
		return err
	}
	book, err := loadBook(a[0])
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s: ok, %d members, serial %d\n", a[0], len(book.Peers), book.Serial)
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
	name := c.String("peer")
	if name == "" {
		return usagef("book export needs --peer NAME")
	}
	book, err := loadBook(a[0])
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
	_, err = e.stdout.Write(conf)
	return err
}
