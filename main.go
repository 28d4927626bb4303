// Command wgmesh joins this machine to a WireGuard full mesh described by a
// shared peer book. See README.md for a guide and `wgmesh --help` for the
// commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wgmesh/wgmesh/internal/procs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// One P while lightly loaded, all of them under load (internal/procs).
	// Here rather than in run, so that tests running commands in process
	// keep their GOMAXPROCS; a GOMAXPROCS the user set is left alone.
	if os.Getenv("GOMAXPROCS") == "" {
		go new(procs.Governor).Run(ctx)
	}
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code:
// 0 on success, 2 for usage errors, 1 for every other error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := newApp(stdin, stdout, stderr).RunContext(ctx, args)
	if err == nil {
		return 0
	}
	// Multi-line errors (every problem of a book) keep one problem per
	// line, so that editors can jump to FILE:LINE.
	fmt.Fprintln(stderr, "wgmesh: "+strings.TrimRight(err.Error(), "\n"))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError marks a command line that cannot be run as written.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}
