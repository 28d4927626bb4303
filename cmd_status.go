package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/control"
)

// defaultControlPath is where `up` serves and `status` looks by default:
// the system runtime directory for root, else the user's, else a private
// directory under /tmp.
func defaultControlPath() string {
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/wgmesh/wgmesh.sock"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "wgmesh", "wgmesh.sock")
	}
	return filepath.Join(os.TempDir(), "wgmesh-"+strconv.Itoa(uid), "wgmesh.sock")
}

func controlFlag() cli.Flag {
	return &cli.StringFlag{
		Name:        "control",
		Value:       defaultControlPath(),
		DefaultText: defaultControlPath(),
		Usage:       "control socket `PATH` of the running node",
	}
}

func (e *env) statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show the running node's members, endpoints, handshake ages and traffic",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
			controlFlag(),
		},
		Action: e.status,
	}
}

func (e *env) status(c *cli.Context) error {
	if _, err := args(c); err != nil {
		return err
	}
	path := c.String("control")
	ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
	defer cancel()
	st, err := control.NewClient(path).Report(ctx)
	if errors.Is(err, control.ErrNoNode) {
		return fmt.Errorf("no node answers on %s: is `wgmesh up` running? use --control to point at its socket", path)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return control.WriteReportTable(e.stdout, st, time.Now())
}
