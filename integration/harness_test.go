// Package integration runs wgmesh on real hosts: network namespaces joined
// by veth pairs and a bridge, each member a `wgmesh up` process started
// with `ip netns exec`. These tests need root; CI runs them as root and
// fails (never skips) when it cannot.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

var wgmeshBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wgmesh-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by all: one test runs the binary as an unprivileged user.
	os.Chmod(dir, 0o755)
	wgmeshBin = filepath.Join(dir, "wgmesh")
	out, err := exec.Command("go", "build", "-o", wgmeshBin, "..").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build wgmesh: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRoot skips without root, except in CI, where a skipped tier would
// hide a missing feature: there it fails.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("network-namespace tests need %s (run as root with the packages .ci/run installs)", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var nsCounter atomic.Int64

// netNS is a network namespace made by a test and removed after it.
type netNS struct {
	t    *testing.T
	Name string
}

func newNS(t *testing.T, role string) *netNS {
	t.Helper()
	name := fmt.Sprintf("wgm%d-%d-%s", os.Getpid()%10000, nsCounter.Add(1), role)
	run(t, "ip", "netns", "add", name)
	ns := &netNS{t: t, Name: name}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns.Run("ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and fails the test on error.
func (ns *netNS) Run(args ...string) string {
	ns.t.Helper()
	return run(ns.t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its error.
func (ns *netNS) Try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Do runs f on an OS thread switched into the namespace. Sockets created
// by f stay in the namespace after f returns.
func (ns *netNS) Do(f func()) {
	ns.t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is left locked and so exits with this goroutine: it
		// must never run anything else in the wrong namespace.
		h, err := netns.GetFromName(ns.Name)
		if err != nil {
			ns.t.Errorf("open netns %s: %v", ns.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ns.t.Errorf("enter netns %s: %v", ns.Name, err)
			return
		}
		f()
	}()
	<-done
}

// lanHost builds a host namespace on the LAN 192.168.lanNet.0/24 behind
// router: the router is .1 on its interface ifName, the host .2 on eth0.
// With routeBack the host's default route goes through the router, as a
// LAN's router knows the way back to the mesh.
func lanHost(t *testing.T, router *netNS, ifName, hostRole string, lanNet int, routeBack bool) *netNS {
	t.Helper()
	h := newNS(t, hostRole)
	run(t, "ip", "link", "add", ifName, "netns", router.Name, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
	router.Run("ip", "addr", "add", fmt.Sprintf("192.168.%d.1/24", lanNet), "dev", ifName)
	router.Run("ip", "link", "set", ifName, "up")
	h.Run("ip", "addr", "add", fmt.Sprintf("192.168.%d.2/24", lanNet), "dev", "eth0")
	h.Run("ip", "link", "set", "eth0", "up")
	if routeBack {
		h.Run("ip", "route", "add", "default", "via", fmt.Sprintf("192.168.%d.1", lanNet))
	}
	return h
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// lan is a bridge in its own namespace standing for the network between
// members ("the internet" of the test).
type lan struct {
	t      *testing.T
	sw     *netNS
	prefix netip.Prefix
	next   int
}

func newLAN(t *testing.T, prefix string) *lan {
	l := &lan{t: t, sw: newNS(t, "sw"), prefix: netip.MustParsePrefix(prefix), next: 1}
	l.sw.Run("ip", "link", "add", "br0", "type", "bridge")
	l.sw.Run("ip", "link", "set", "br0", "up")
	return l
}

// attach connects ns to the bridge and returns its address on the LAN.
func (l *lan) attach(ns *netNS, ifname string) netip.Addr {
	l.t.Helper()
	addr := l.prefix.Addr()
	for range l.next {
		addr = addr.Next()
	}
	l.next++
	peer := fmt.Sprintf("p%d", l.next)
	run(l.t, "ip", "link", "add", ifname, "netns", ns.Name, "type", "veth", "peer", "name", peer, "netns", l.sw.Name)
	l.sw.Run("ip", "link", "set", peer, "master", "br0", "up")
	ns.Run("ip", "addr", "add", netip.PrefixFrom(addr, l.prefix.Bits()).String(), "dev", ifname)
	ns.Run("ip", "link", "set", ifname, "up")
	return addr
}

// member is one mesh member: its namespace, key and, once started, its
// wgmesh process.
type member struct {
	Name     string
	NS       *netNS
	Key      peerbook.PrivateKey
	KeyFile  string
	Control  string
	Underlay netip.Addr
	// IfName is the member's TUN interface. The UAPI socket directory
	// (/var/run/wireguard) is shared by all namespaces, so every member
	// needs its own name.
	IfName string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan error
}

func newMember(t *testing.T, dir, name string, ns *netNS) *member {
	t.Helper()
	k, err := peerbook.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &member{Name: name, NS: ns, Key: k, KeyFile: filepath.Join(dir, name+".key"), Control: filepath.Join(dir, name+".sock"), IfName: "wgm-" + name}
	if err := peerbook.WriteKeyFile(m.KeyFile, k); err != nil {
		t.Fatal(err)
	}
	return m
}

// start runs `wgmesh up` in the member's namespace and waits until its
// control socket answers. Its state directory is the test's (args may
// name another), never the host's /var/lib/wgmesh.
func (m *member) start(t *testing.T, book string, args ...string) {
	t.Helper()
	state := filepath.Join(filepath.Dir(m.KeyFile), m.Name+".state")
	argv := append([]string{"netns", "exec", m.NS.Name, wgmeshBin, "--log-level", "debug", "up", "--book", book, "--key", m.KeyFile, "--control", m.Control, "--state-dir", state}, args...)
	m.launch(t, exec.Command("ip", argv...))
}

// launch starts cmd as the member's process and waits for its control
// socket to answer.
func (m *member) launch(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	m.cmd = cmd
	m.stderr = &bytes.Buffer{}
	m.cmd.Stderr = m.stderr
	m.cmd.Stdout = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.exited = make(chan error, 1)
	go func() { m.exited <- m.cmd.Wait() }()
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", m.Name, m.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := m.status(); err == nil {
			return
		}
		select {
		case err := <-m.exited:
			// Put it back for the cleanup's stop, which waits for it.
			m.exited <- err
			t.Fatalf("%s exited during start-up: %v\n%s", m.Name, err, m.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up\n%s", m.Name, m.stderr.String())
		}
	}
}

// stop sends SIGTERM, as a service manager does, and waits for a clean
// exit.
func (m *member) stop() error {
	return m.signal(syscall.SIGTERM)
}

// signal sends sig and waits up to 10 s for the process to exit; then it
// kills it. The error is the process's exit status.
func (m *member) signal(sig os.Signal) error {
	if m.cmd == nil || m.cmd.Process == nil {
		return nil
	}
	m.cmd.Process.Signal(sig)
	select {
	case err := <-m.exited:
		m.cmd = nil
		return err
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
		m.cmd = nil
		return fmt.Errorf("%s did not exit within 10 s of %v", m.Name, sig)
	}
}

// kill ends the process with SIGKILL, leaving whatever it set up.
func (m *member) kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

func (m *member) status() (node.Status, error) {
	var st node.Status
	out, err := exec.Command(wgmeshBin, "status", "--json", "--control", m.Control).Output()
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(out, &st)
	return st, err
}

// writeBook writes a book for members to dir and returns its path.
func writeBook(t *testing.T, dir string, b *peerbook.Book) string {
	t.Helper()
	path := filepath.Join(dir, "book.toml")
	if err := os.WriteFile(path, peerbook.Marshal(b), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := peerbook.Load(path); err != nil {
		t.Fatalf("generated book is invalid: %v", err)
	}
	return path
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
