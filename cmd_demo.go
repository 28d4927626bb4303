package main

import (
	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/demo"
)

func (e *env) demoCommand() *cli.Command {
	return &cli.Command{
		Name:      "demo",
		Usage:     "run a three-member mesh on loopback (netstack mode, no root) and check every pair",
		ArgsUsage: " ",
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			return demo.Run(c.Context, e.stdout, e.log)
		},
	}
}
