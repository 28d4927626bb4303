package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/config"
	"github.com/wgmesh/wgmesh/control"
)

func controlFlag() cli.Flag {
	return &cli.StringFlag{
		Name:        "control",
		DefaultText: filepath.Join(runtimeBase(), "INSTANCE", "control.sock"),
		Usage:       "control socket `PATH` of the running node",
	}
}

func (e *env) statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show the running node's members, endpoints, handshake ages and traffic (with several nodes running: list them)",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
			&cli.StringFlag{Name: "instance", DefaultText: "the only one running", Usage: "show the node of instance `NAME`"},
			controlFlag(),
		},
		Action: e.status,
	}
}

func (e *env) status(c *cli.Context) error {
	if _, err := args(c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
	defer cancel()
	path := c.String("control")
	switch {
	case path != "" && c.IsSet("instance"):
		return usagef("give --control or --instance, not both")
	case path != "":
	case c.IsSet("instance"):
		name := c.String("instance")
		if err := config.InstanceName(name); err != nil {
			return usagef("--instance: %v", err)
		}
		path = controlPathOf(name)
	default:
		running := runningInstances(ctx)
		switch len(running) {
		case 0:
			return fmt.Errorf("no node answers under %s: is `wgmesh up` running? use --instance or --control to point at its socket", runtimeBase())
		case 1:
			return e.showReport(c, running[0].report)
		default:
			return e.listInstances(c, running)
		}
	}
	client := control.NewClient(path)
	if c.Bool("json") {
		raw, err := client.ReportJSON(ctx)
		if errors.Is(err, control.ErrNoNode) {
			return fmt.Errorf("no node answers on %s: is `wgmesh up` running? use --control to point at its socket", path)
		}
		if err != nil {
			return err
		}
		return writeJSONDocument(e.stdout, raw)
	}
	rep, err := client.Report(ctx)
	if errors.Is(err, control.ErrNoNode) {
		return fmt.Errorf("no node answers on %s: is `wgmesh up` running? use --control to point at its socket", path)
	}
	if err != nil {
		return err
	}
	return e.showReport(c, rep)
}

func (e *env) showReport(c *cli.Context, rep control.Report) error {
	// One write per 64 KiB, not one per table cell: a 10,000-member
	// table is 70,000 cells.
	out := bufio.NewWriterSize(e.stdout, 64<<10)
	var err error
	if c.Bool("json") {
		var doc []byte
		if doc, err = json.Marshal(rep); err == nil {
			err = writeJSONDocument(e.stdout, doc)
		}
	} else {
		err = control.WriteReportTable(out, rep, time.Now())
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	return err
}

// instance is a node found in the runtime directory.
type instance struct {
	Name    string         `json:"instance"`
	Control string         `json:"control"`
	report  control.Report // as it answered
}

// runningInstances asks every control socket under the runtime directory,
// in name order, and returns those that answer.
func runningInstances(ctx context.Context) []instance {
	base := runtimeBase()
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var out []instance
	for _, d := range ents {
		if !d.IsDir() {
			continue
		}
		p := filepath.Join(base, d.Name(), "control.sock")
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		rep, err := control.NewClient(p).Report(rctx)
		cancel()
		if err == nil {
			out = append(out, instance{Name: d.Name(), Control: p, report: rep})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// listInstances shows one line per running node.
func (e *env) listInstances(c *cli.Context, running []instance) error {
	if c.Bool("json") {
		type entry struct {
			instance
			Report control.Report `json:"status"`
		}
		list := make([]entry, len(running))
		for i, r := range running {
			list[i] = entry{r, r.report}
		}
		doc, err := json.Marshal(list)
		if err != nil {
			return err
		}
		return writeJSONDocument(e.stdout, doc)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tNAME\tMODE\tADDRESSES\tPORT\tSERIAL\tMEMBERS\tCONTROL")
	for _, r := range running {
		st := r.report.Status
		addrs := ""
		for i, a := range st.Addresses {
			if i > 0 {
				addrs += ","
			}
			addrs += a.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Name, st.Name, st.Mode, addrs, st.ListenPort, st.BookSerial, len(st.Peers)+1, r.Control)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(e.stdout, "several nodes run here; `wgmesh status --instance NAME` shows one")
	return err
}

// writeJSONDocument prints a compact JSON document: indented for a
// terminal, as it came (one line) for a pipe or a file, where jq or a
// program reads it and indenting 10,000 members would cost more than the
// node's answer.
func writeJSONDocument(w io.Writer, doc []byte) error {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			var out bytes.Buffer
			if err := json.Indent(&out, doc, "", "  "); err != nil {
				return err
			}
			doc = out.Bytes()
		}
	}
	if _, err := w.Write(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
