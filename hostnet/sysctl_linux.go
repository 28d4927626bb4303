package hostnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// forwardingSysctls are the only sysctls hostnet changes, by the name the
// state file records them under. The state file names keys, never paths,
// so a changed file cannot make Undo write anywhere else.
var forwardingSysctls = map[string]string{
	"net.ipv4.ip_forward":          "/proc/sys/net/ipv4/ip_forward",
	"net.ipv6.conf.all.forwarding": "/proc/sys/net/ipv6/conf/all/forwarding",
	// An exit node's rule sends unmarked packets into the mesh; with
	// strict reverse-path filtering, replies from the underlay to the
	// marked WireGuard sockets pass only if the check sees the mark, as
	// wg-quick arranges.
	"net.ipv4.conf.all.src_valid_mark": "/proc/sys/net/ipv4/conf/all/src_valid_mark",
}

// stateFileMax bounds the state file; it holds a line per sysctl.
const stateFileMax = 4096

// StateFile is the name, in Setup.StateDir, of the file that holds the
// original values of the sysctls changed for interface ifname.
func StateFile(ifname string) string { return "sysctl-" + ifname }

// enableForwarding turns on forwarding for the families of addrs. The
// original values are recorded before anything is written, so a process
// killed in between still leaves them behind for the next run; a value
// recorded by a run that could not restore it is the original one and is
// kept, never replaced by the 1 that run left.
func (a *Applied) enableForwarding(keys []string) error {
	type change struct{ key, path string }
	var todo []change
	for _, key := range keys {
		path := forwardingSysctls[key]
		cur, err := readSysctl(path)
		if err != nil {
			return fmt.Errorf("hostnet: enable forwarding: %w", err)
		}
		if cur == "1" {
			continue
		}
		if _, ok := a.sysctls[key]; !ok {
			a.sysctls[key] = cur
		}
		todo = append(todo, change{key, path})
	}
	if err := a.saveState(); err != nil {
		return err
	}
	for _, c := range todo {
		if err := os.WriteFile(c.path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("hostnet: enable forwarding (%s): %w", c.path, err)
		}
	}
	return nil
}

func forwardingKeys(ipv6 bool) []string {
	keys := []string{"net.ipv4.ip_forward"}
	if ipv6 {
		keys = append(keys, "net.ipv6.conf.all.forwarding")
	}
	return keys
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// restoreSysctls writes back every recorded value; once all are back the
// state file goes.
func (a *Applied) restoreSysctls() error {
	var errs []error
	for key, old := range a.sysctls {
		if err := os.WriteFile(forwardingSysctls[key], []byte(old+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s = %s: %w", key, old, err))
			continue
		}
		delete(a.sysctls, key)
	}
	if len(errs) > 0 {
		// Keep the file: the next run tries again.
		a.saveState()
		return errors.Join(errs...)
	}
	if a.stateFile != "" && a.stateOK {
		if err := os.Remove(a.stateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", a.stateFile, err)
		}
	}
	return nil
}

// loadState reads the values a previous run for this interface recorded
// and did not restore (it was killed). A missing file is no such run.
func (a *Applied) loadState() error {
	if a.stateFile == "" {
		return nil
	}
	data, err := fileutil.ReadFileLimitNoFollow(a.stateFile, stateFileMax)
	if errors.Is(err, fs.ErrNotExist) {
		a.stateOK = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if _, known := forwardingSysctls[key]; !ok || !known || !digits(value) {
			return fmt.Errorf("hostnet: %s:%d: want \"net.ipv4.ip_forward = 0\" or \"net.ipv6.conf.all.forwarding = 0\", got %q; it holds the values to restore after wgmesh was killed: restore them yourself (sysctl -w) and remove the file", a.stateFile, line, text)
		}
		a.sysctls[key] = value
	}
	a.stateOK = true
	return nil
}

func digits(s string) bool {
	if s == "" || len(s) > 8 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// saveState writes the recorded values to the state file atomically (a
// new file renamed over the old), mode 0600; with none left, it removes
// the file.
func (a *Applied) saveState() error {
	if a.stateFile == "" || !a.stateOK {
		return nil
	}
	if len(a.sysctls) == 0 {
		if err := os.Remove(a.stateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("hostnet: %w", err)
		}
		return nil
	}
	keys := make([]string, 0, len(a.sysctls))
	for k := range a.sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable file
	var b strings.Builder
	fmt.Fprintf(&b, "# wgmesh: values to restore when interface %s goes away. wgmesh restores\n# them on exit; after a crash, the next run does.\n", a.ifname)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, a.sysctls[k])
	}
	if err := os.MkdirAll(filepath.Dir(a.stateFile), 0o700); err != nil {
		return fmt.Errorf("hostnet: record the original sysctl values: %w", err)
	}
	if err := fileutil.WriteFileAtomic(a.stateFile, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("hostnet: record the original sysctl values: %w", err)
	}
	return nil
}
