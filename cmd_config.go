package main

import (
	"errors"
	"fmt"
	"github.com/wgmesh/wgmesh/booksource"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/config"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// The name of a node when neither --instance nor the config file gives
// one, in netstack mode. In TUN mode it is the interface's name.
const defaultInstance = "wgmesh"

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "read settings from the TOML `FILE` (keys are these flags' names with _ for -, e.g. listen_port); flags given here override it"}
}

func instanceFlag() cli.Flag {
	return &cli.StringFlag{Name: "instance", DefaultText: "the --config file's name without .toml, else the --interface name with --mode tun, else " + defaultInstance,
		Usage: "`NAME` of this node on the host: names its default control socket and state dir, so several nodes need no other flags"}
}

// upSettings is the checked configuration of `up`: the command line over
// the --config file over the defaults, and the instance name.
func (e *env) upSettings(c *cli.Context) (upConfig, string, error) {
	fromFile, err := e.applyConfigFile(c)
	if err != nil {
		return upConfig{}, "", err
	}
	instance, err := applyInstance(c)
	if err != nil {
		return upConfig{}, "", err
	}
	cfg, err := upFlags(c)
	return cfg, instance, fromFile.locate(err)
}

// fileSettings are the settings taken from the config file, by flag name.
type fileSettings struct {
	path   string
	byFlag map[string]config.Setting
}

var flagInMessage = regexp.MustCompile(`--([a-z][a-z-]*)`)

// locate points a usage error about a flag the file set at the file's
// line: "home.toml:4: book_poll: --book-poll applies to…".
func (fs fileSettings) locate(err error) error {
	var ue usageError
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	m := flagInMessage.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	s, ok := fs.byFlag[m[1]]
	if !ok {
		return err
	}
	return usagef("%s:%d: %s: %v", fs.path, s.Line, s.Key, err)
}

// applyConfigFile sets every flag of c that the --config file sets and the
// command line does not.
func (e *env) applyConfigFile(c *cli.Context) (fileSettings, error) {
	fs := fileSettings{path: c.String("config"), byFlag: map[string]config.Setting{}}
	if fs.path == "" {
		return fs, nil
	}
	f, err := config.Load(fs.path)
	if err != nil {
		var perr *peerbook.Error
		if errors.As(err, &perr) {
			return fs, usageError{fmt.Errorf("config file %s refused, %s:\n%w", fs.path, plural(len(perr.Problems), "problem"), err)}
		}
		return fs, usageError{err}
	}
	for _, s := range f.Settings() {
		if s.Flag == "log-level" {
			if !logLevelGiven(c) {
				if err := e.setLogLevel(s.Values[0]); err != nil {
					return fs, err
				}
			}
			continue
		}
		if c.IsSet(s.Flag) {
			continue // the command line wins
		}
		for _, v := range s.Values {
			if err := c.Set(s.Flag, v); err != nil {
				return fs, usagef("%s:%d: %s %q: %v", fs.path, s.Line, s.Key, v, err)
			}
		}
		fs.byFlag[s.Flag] = s
	}
	return fs, nil
}

// logLevelGiven reports whether --log-level is on the command line,
// before the command or after it.
func logLevelGiven(c *cli.Context) bool {
	for _, x := range c.Lineage() {
		if x.IsSet("log-level") {
			return true
		}
	}
	return false
}

// applyInstance picks the node's instance name and, unless given, points
// --control and --state-dir at that instance's paths. The name is
// --instance (or the config file's instance key), else the config file's
// name without .toml, else the TUN interface's name in TUN mode, else
// "wgmesh".
func applyInstance(c *cli.Context) (string, error) {
	name := c.String("instance")
	if p := c.String("config"); name == "" && p != "" {
		// /etc/wgmesh/home.toml is instance home, as for wgmesh@home.
		name = strings.TrimSuffix(filepath.Base(p), ".toml")
	}
	unnamed := name == ""
	if name == "" {
		name = defaultInstance
		if node.Mode(c.String("mode")) == node.ModeTUN {
			name = c.String("interface")
			if name == "" {
				name = defaultTUNName()
			}
		}
	}
	if err := config.InstanceName(name); err != nil {
		return "", usagef("--instance: %v", err)
	}
	if !c.IsSet("control") {
		p, err := instanceControlPath(name)
		if err != nil {
			return "", err
		}
		if err := c.Set("control", p); err != nil {
			return "", err
		}
	}
	if !c.IsSet("state-dir") {
		if d := instanceStateDir(name, unnamed); d != "" {
			if err := c.Set("state-dir", d); err != nil {
				return "", err
			}
		}
	}
	return name, nil
}

// defaultTUNName is node's default interface name, which also names the
// instance of a TUN node.
func defaultTUNName() string {
	if runtime.GOOS == "darwin" {
		return "utun"
	}
	return "wgmesh0"
}

// runtimeBase holds one directory per instance, each with its control
// socket: the system runtime directory for root, else the user's, else a
// private directory under /tmp.
func runtimeBase() string {
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/wgmesh"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "wgmesh")
	}
	return filepath.Join(os.TempDir(), "wgmesh-"+strconv.Itoa(uid))
}

// instanceControlPath is the default control socket of instance name,
// RUNTIME_BASE/NAME/control.sock, as the systemd unit sets it. The base
// directory must be private too: the control package checks only the
// socket's own directory, and whoever can write the base can swap it.
func instanceControlPath(name string) (string, error) {
	base := runtimeBase()
	if err := fileutil.PrivateDir(base, "runtime directory"); err != nil {
		return "", err
	}
	return filepath.Join(base, name, "control.sock"), nil
}

// controlPathOf is instanceControlPath without the check, for clients.
func controlPathOf(name string) string {
	return filepath.Join(runtimeBase(), name, "control.sock")
}

// instanceStateDir is the default state directory of instance name:
// /var/lib/wgmesh/NAME for root (the systemd unit's StateDirectory), else
// under the user's XDG state directory; "" when there is none.
//
// Before instances, an unnamed node kept its state in the base directory
// itself. While the base still holds that node's serial file and the
// instance's directory holds none, an unnamed node goes on using it: moving
// would forget the highest serial it accepted, its rollback protection.
func instanceStateDir(name string, unnamed bool) string {
	return instanceStateDirIn(defaultStateDir(), name, unnamed)
}

func instanceStateDirIn(base, name string, unnamed bool) string {
	if base == "" {
		return ""
	}
	dir := filepath.Join(base, name)
	if unnamed && isRegular(filepath.Join(base, booksource.SerialFile)) && !isRegular(filepath.Join(dir, booksource.SerialFile)) {
		return base
	}
	return dir
}

func isRegular(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular()
}
