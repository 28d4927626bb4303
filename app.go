package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"
)

// env is what every command works with: the standard streams and the
// logger chosen by --log-level.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, log: slog.New(slog.DiscardHandler)}
	app := &cli.App{
		Name:  "wgmesh",
		Usage: "join this machine to a WireGuard full mesh described by a shared peer book",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:  "log-level",
				Value: "info",
				Usage: "log `LEVEL`: debug, info, warn or error (logs go to stderr)",
			},
		},
		Before: func(c *cli.Context) error { return e.setLogLevel(c.String("log-level")) },
		Commands: []*cli.Command{
			e.keyCommand(),
			e.bookCommand(),
			e.inviteCommand(),
			e.joinCommand(),
			e.upCommand(),
			e.statusCommand(),
			e.uiCommand(),
			e.demoCommand(),
			e.versionCommand(),
			e.completionCommand(),
			e.manCommand(),
		},
		Action:                    unknownCommand,
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideVersion:               true,
		EnableBashCompletion:      true, // the completion scripts ask the binary
		DisableSliceFlagSeparator: true, // a --forward value is never a list
		// Errors are printed and mapped to exit codes by run, in one place.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
	}
	setUsageErrors(app.Commands)
	e.acceptLogLevel(app.Commands)
	return app
}

func (e *env) setLogLevel(s string) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", s)
	}
	e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// acceptLogLevel lets --log-level follow the command too, as in
// `wgmesh up --log-level debug`, where people naturally put it.
func (e *env) acceptLogLevel(cmds []*cli.Command) {
	for _, c := range cmds {
		if len(c.Subcommands) > 0 {
			e.acceptLogLevel(c.Subcommands)
			continue
		}
		c.Flags = append(c.Flags, &cli.StringFlag{Name: "log-level", Usage: "log `LEVEL`, as the global option"})
		c.Before = func(c *cli.Context) error {
			if v := c.String("log-level"); v != "" {
				return e.setLogLevel(v)
			}
			return nil
		}
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return usageError{fmt.Errorf("%v (see: %s --help)", err, c.Command.HelpName)}
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageErrors(c.Subcommands)
	}
}

// unknownCommand is the action of the app and of command groups: it runs
// only when no known subcommand was named.
func unknownCommand(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("unknown command %q (see: %s --help)", c.Args().First(), c.Command.HelpName)
	}
	cli.ShowSubcommandHelp(c)
	return usagef("%s needs a command", c.Command.HelpName)
}

// requiredFlag returns the value of the string flag name, or a usage error
// when it is empty: "book remove needs --name NAME", with metavar the
// flag's placeholder.
func requiredFlag(c *cli.Context, name, metavar string) (string, error) {
	if v := c.String(name); v != "" {
		return v, nil
	}
	return "", usagef("%s needs --%s %s", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), name, metavar)
}

// args checks the number of positional arguments.
func args(c *cli.Context, names ...string) ([]string, error) {
	if c.NArg() != len(names) {
		want := ""
		for _, n := range names {
			want += " " + n
		}
		return nil, usagef("usage: %s [options]%s (got %d arguments)", c.Command.HelpName, want, c.NArg())
	}
	return c.Args().Slice(), nil
}
