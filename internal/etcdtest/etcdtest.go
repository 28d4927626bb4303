// Package etcdtest runs a real etcd cluster (Debian's etcd-server) for
// tests: its members listen on loopback addresses of their own, derived
// from the test process's pid so that parallel test binaries never
// collide, with data in a directory the caller owns. Start it once per
// package, in TestMain, and Stop it at the end.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Binary is the etcd server program the tests run.
const Binary = "etcd"

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
	dir     string
}

// Member is one etcd server.
type Member struct {
	Name    string
	IP      string
	dataDir string
	logPath string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
}

// ClientAddr is the member's client host:port.
func (m *Member) ClientAddr() string { return m.IP + ":2379" }

// Running reports whether the member's process is alive.
func (m *Member) Running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Find returns the etcd binary's path, or an error saying how to get it.
func Find() (string, error) {
	p, err := exec.LookPath(Binary)
	if err != nil {
		return "", errors.New("etcd is not installed (Debian package etcd-server); .ci/run installs it")
	}
	return p, nil
}

// baseIP is 127.A.B of this process: A.B from the pid, never 0.0 (where
// 127.0.0.1 lives, and perhaps a real etcd).
func baseIP() string {
	pid := os.Getpid()
	a := (pid>>8)&0xff | 0x80 // 128-255: far from 127.0.0.x
	return fmt.Sprintf("127.%d.%d", a, pid&0xff)
}

// Start runs an n-member cluster with data under dir and waits until
// every member is healthy. extra are added to every member's flags (for
// --auth-token, say).
func Start(dir string, n int, extra ...string) (*Cluster, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	base := baseIP()
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("m%d", i), IP: fmt.Sprintf("%s.%d", base, 10+i)}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"=http://"+m.IP+":2380")
	}
	token := fmt.Sprintf("wgmesh-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, m := range c.Members {
		m.dataDir = filepath.Join(dir, m.Name)
		m.logPath = filepath.Join(dir, m.Name+".log")
		m.args = append([]string{
			"--name", m.Name,
			"--data-dir", m.dataDir,
			"--listen-client-urls", "http://" + m.IP + ":2379",
			"--advertise-client-urls", "http://" + m.IP + ":2379",
			"--listen-peer-urls", "http://" + m.IP + ":2380",
			"--initial-advertise-peer-urls", "http://" + m.IP + ":2380",
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			// Fast elections: a killed leader is replaced within a second.
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
			"--logger", "zap",
			"--log-outputs", "stderr",
		}, extra...)
		if err := m.start(bin); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, m := range c.Members {
		if err := m.waitHealthy(30 * time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (m *Member) start(bin string) error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(bin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = sysProcAttr()
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting etcd %s: %w", m.Name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(done)
	}(m.cmd, m.done)
	return nil
}

// waitHealthy polls the member's /health until it says true.
func (m *Member) waitHealthy(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	for time.Now().Before(deadline) {
		if !m.Running() {
			return fmt.Errorf("etcd %s exited at start; its log: %s", m.Name, m.tail())
		}
		resp, err := client.Get("http://" + m.ClientAddr() + "/health")
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if strings.Contains(string(b[:n]), `"health":"true"`) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcd %s not healthy within %v; its log: %s", m.Name, wait, m.tail())
}

func (m *Member) tail() string {
	b, _ := os.ReadFile(m.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Endpoints are the members' client addresses, host:port.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientAddr())
	}
	return out
}

// URL is the book address etcd://ALL-MEMBERS/prefix.
func (c *Cluster) URL(prefix string) string {
	return "etcd://" + strings.Join(c.Endpoints(), ",") + "/" + prefix
}

// Kill sends SIGKILL to member i and waits for it to exit.
func (c *Cluster) Kill(i int) {
	m := c.Members[i]
	if !m.Running() {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// Restart starts member i again on its data (after Kill) and waits until
// it is healthy, which needs a quorum.
func (c *Cluster) Restart(i int) error {
	m := c.Members[i]
	if m.Running() {
		return nil
	}
	bin, err := Find()
	if err != nil {
		return err
	}
	// On restart the cluster exists already: the initial-* flags are
	// ignored for an existing data dir.
	if err := m.start(bin); err != nil {
		return err
	}
	return nil
}

// WaitHealthy waits until every running member is healthy.
func (c *Cluster) WaitHealthy(wait time.Duration) error {
	for _, m := range c.Members {
		if m.Running() {
			if err := m.waitHealthy(wait); err != nil {
				return err
			}
		}
	}
	return nil
}

// Leader returns the index of the member that is leader, by each
// member's /metrics (etcd_server_is_leader 1).
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	for {
		for i, m := range c.Members {
			if !m.Running() {
				continue
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.ClientAddr()+"/metrics", nil)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			var sb strings.Builder
			buf := make([]byte, 32<<10)
			for {
				n, err := resp.Body.Read(buf)
				sb.Write(buf[:n])
				if err != nil {
					break
				}
			}
			resp.Body.Close()
			if strings.Contains(sb.String(), "\netcd_server_is_leader 1\n") {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no etcd leader: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills every member and waits for them.
func (c *Cluster) Stop() {
	for i := range c.Members {
		c.Kill(i)
	}
}
