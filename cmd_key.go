package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/peerbook"
)

func (e *env) keyCommand() *cli.Command {
	return &cli.Command{
		Name:   "key",
		Usage:  "generate private keys and derive public keys (wg genkey / wg pubkey format)",
		Action: unknownCommand,
		Subcommands: []*cli.Command{
			{
				Name:      "generate",
				Usage:     "print a new private key, or write it to a new file with mode 0600",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "write the key to `FILE` (refuses to overwrite) and print its public key"},
				},
				Action: e.keyGenerate,
			},
			{
				Name:      "public",
				Usage:     "print the public key of a private key read from stdin or --key",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "read the private key from `FILE` (must be mode 0600) instead of stdin"},
				},
				Action: e.keyPublic,
			},
		},
	}
}

func (e *env) keyGenerate(c *cli.Context) error {
	if _, err := args(c); err != nil {
		return err
	}
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		return err
	}
	out := c.String("out")
	if out == "" {
		_, err := fmt.Fprintln(e.stdout, k.Encode())
		return err
	}
	if err := peerbook.WriteKeyFile(out, k); err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, k.Public().String())
	return err
}

func (e *env) keyPublic(c *cli.Context) error {
	if _, err := args(c); err != nil {
		return err
	}
	var (
		k   peerbook.PrivateKey
		err error
	)
	if path := c.String("key"); path != "" {
		k, err = peerbook.ReadKeyFile(path)
	} else if k, err = peerbook.ReadPrivateKey(e.stdin); err != nil {
		err = fmt.Errorf("stdin: %w", err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, k.Public().String())
	return err
}
