package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
)

// The end-to-end test runs the wgmesh binary built from this repository:
// three `wgmesh up` processes on 127.0.0.1, one book, forwards and exposes,
// SIGHUP reloads, status, and start-up failures.

const payloadSize = 10 << 20

// buildBinary builds wgmesh for an end-to-end test; every such test
// calls it first, so -short skips them here.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "wgmesh")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running `wgmesh up`.
type proc struct {
	name    string
	control string
	cmd     *exec.Cmd
	stderr  *testutil.Buffer
	done    chan struct{}
	err     error // valid after done
}

func startUp(t *testing.T, bin, name, control string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, control: control, stderr: &testutil.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"up", "--control", control}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// status runs `wgmesh status --json` against p.
func (p *proc) status(t *testing.T, bin string) (node.Status, error) {
	t.Helper()
	var st node.Status
	out, err := exec.Command(bin, "status", "--json", "--control", p.control).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return st, fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// waitStatus polls p's status until cond holds, for at most 20 seconds.
func (p *proc) waitStatus(t *testing.T, bin, what string, cond func(node.Status) bool) node.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, what)
		}
		st, err := p.status(t, bin)
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 20s (last status error: %v)", p.name, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// boundForward waits for p's ready line and returns the address its
// --forward to target bound: forward="PROTO:ADDR=TARGET".
func boundForward(t *testing.T, p *proc, proto, target string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=ready .*` + proto + `:(127\.0\.0\.1:[0-9]+)=` + regexp.QuoteMeta(target))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil && !strings.HasSuffix(m[1], ":0") {
			return m[1]
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: no bound %s forward to %s in a ready line", p.name, proto, target)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// download reads everything from a TCP address and checks it against want.
func download(t *testing.T, addr string, want []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if n != int64(len(want)) {
		t.Fatalf("received %d bytes, want %d", n, len(want))
	}
	if sum := sha256.Sum256(want); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatal("SHA-256 of the received bytes differs from the payload's")
	}
}

// payloadServer serves data to every TCP client, then closes.
func payloadServer(t *testing.T, data []byte) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				c.Write(data)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// udpEcho answers every datagram with "echo: " and the datagram.
func udpEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	bookPath := filepath.Join(dir, "book.toml")
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	// The first book has no endpoints: nobody knows the others' ports yet.
	writeBook(t, bookPath, 1, ms)

	payload := make([]byte, payloadSize)
	rand.Read(payload)
	payloadAddr := payloadServer(t, payload)
	echoAddr := udpEcho(t)

	common := func(m *testMember) []string {
		return []string{"--book", bookPath, "--key", m.keyPath, "--listen-port", "0", "--log-level", "debug"}
	}
	ctl := func(name string) string { return filepath.Join(dir, "run", name, "wgmesh.sock") }
	beta := startUp(t, bin, "beta", ctl("beta"), append(common(ms[1]),
		"--expose", "tcp:9000="+payloadAddr.String(),
		"--expose", "udp:9001="+echoAddr.String())...)
	gamma := startUp(t, bin, "gamma", ctl("gamma"), common(ms[2])...)
	alpha := startUp(t, bin, "alpha", ctl("alpha"), append(common(ms[0]),
		"--forward", "tcp:127.0.0.1:0=beta:9000",
		"--forward", "udp:127.0.0.1:0=beta.mesh:9001")...)
	procs := []*proc{alpha, beta, gamma}

	// Learn the ports the system chose, publish them, reload everyone.
	for i, p := range procs {
		st := p.waitStatus(t, bin, "start-up", func(st node.Status) bool { return st.ListenPort != 0 })
		if st.Name != ms[i].name {
			t.Fatalf("status of %s says name %q", p.name, st.Name)
		}
		ms[i].port = st.ListenPort
	}
	for _, p := range procs {
		if !strings.Contains(p.stderr.String(), "msg=ready") {
			t.Errorf("%s serves status but logged no ready line", p.name)
		}
	}
	// The forwards listen on ports the system chose; the ready line says
	// which.
	tcpForward := boundForward(t, alpha, "tcp", "beta:9000")
	udpForward := boundForward(t, alpha, "udp", "beta.mesh:9001")
	writeBook(t, bookPath, 2, ms)
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, p := range procs {
		p.waitStatus(t, bin, "reload to serial 2", func(st node.Status) bool {
			for _, ps := range st.Peers {
				if ps.Endpoint == "" {
					return false
				}
			}
			return st.BookSerial == 2
		})
	}

	t.Run("10MiB through forward and expose", func(t *testing.T) {
		download(t, tcpForward, payload)
	})

	t.Run("UDP through forward and expose", func(t *testing.T) {
		c, err := net.Dial("udp", udpForward)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := range 5 {
			msg := fmt.Sprintf("datagram %d", i)
			got := ""
			// A datagram may be lost; retry a few times, bounded.
			for try := 0; try < 5 && got == ""; try++ {
				c.Write([]byte(msg))
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := c.Read(buf); err == nil {
					got = string(buf[:n])
				}
			}
			if got != "echo: "+msg {
				t.Fatalf("sent %q, got %q", msg, got)
			}
		}
	})

	t.Run("status shows handshakes", func(t *testing.T) {
		st, err := alpha.status(t, bin)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, ps := range st.Peers {
			if ps.Name != "beta" {
				continue
			}
			found = true
			if ps.LastHandshake.IsZero() || ps.RxBytes == 0 || ps.TxBytes == 0 {
				t.Errorf("alpha's view of beta: handshake %v, rx %d, tx %d; want a handshake and traffic", ps.LastHandshake, ps.RxBytes, ps.TxBytes)
			}
			if ps.RxBytes < payloadSize {
				t.Errorf("alpha received %d bytes from beta, less than the %d sent through the mesh", ps.RxBytes, payloadSize)
			}
			if ps.Endpoint != "127.0.0.1:"+strconv.Itoa(int(ms[1].port)) {
				t.Errorf("beta's endpoint %q, want 127.0.0.1:%d", ps.Endpoint, ms[1].port)
			}
		}
		if !found {
			t.Fatalf("alpha's status lists no beta: %+v", st)
		}
		out, err := exec.Command(bin, "status", "--control", alpha.control).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "HANDSHAKE") || !strings.Contains(string(out), "ago") {
			t.Errorf("status table: %v\n%s", err, out)
		}
		for _, m := range ms {
			for _, p := range procs {
				if strings.Contains(p.stderr.String(), m.key.Encode()) {
					t.Errorf("%s logged the private key of %s", p.name, m.name)
				}
			}
		}
	})

	t.Run("bad book on SIGHUP keeps the running one", func(t *testing.T) {
		if err := os.WriteFile(bookPath, []byte(badBook), 0o644); err != nil {
			t.Fatal(err)
		}
		gamma.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(gamma.stderr.String(), bookPath+":3: ") {
			if time.Now().After(deadline) {
				t.Fatal("gamma logged no FILE:LINE problem for the bad book")
			}
			time.Sleep(50 * time.Millisecond)
		}
		st := gamma.waitStatus(t, bin, "status", func(node.Status) bool { return true })
		if st.BookSerial != 2 || len(st.Peers) != 2 {
			t.Errorf("after a bad reload gamma runs serial %d with %d peers, want serial 2 with 2", st.BookSerial, len(st.Peers))
		}
		writeBook(t, bookPath, 2, ms)
	})

	t.Run("SIGTERM stops cleanly", func(t *testing.T) {
		gamma.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-gamma.done:
		case <-time.After(10 * time.Second):
			t.Fatal("gamma still running 10s after SIGTERM")
		}
		if gamma.err != nil {
			t.Errorf("gamma exited with %v after SIGTERM, want 0", gamma.err)
		}
		if _, err := os.Lstat(gamma.control); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("gamma left its control socket behind: %v", err)
		}
	})

	t.Run("bad inputs", func(t *testing.T) {
		openKey := filepath.Join(dir, "open.key")
		if err := os.WriteFile(openKey, []byte(ms[0].key.Encode()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(openKey, 0o644)
		badPath := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(badPath, []byte(badBook), 0o644); err != nil {
			t.Fatal(err)
		}
		missing := filepath.Join(dir, "missing.key")
		busy := payloadAddr.String() // the payload server holds this port

		for _, tc := range []struct {
			name string
			args []string
			want []string
		}{
			{"missing key file", []string{"--book", bookPath, "--key", missing}, []string{missing}},
			{"key file 0644", []string{"--book", bookPath, "--key", openKey}, []string{openKey, "chmod 600"}},
			{"book with errors", []string{"--book", badPath, "--key", ms[0].keyPath}, []string{badPath + ":3: "}},
			{"unknown member in --forward", []string{"--book", bookPath, "--key", ms[0].keyPath,
				"--forward", "tcp:127.0.0.1:1=delta:80"}, []string{"--forward", `"delta"`, "alpha, beta, gamma"}},
			{"port in use for --forward", []string{"--book", bookPath, "--key", ms[0].keyPath,
				"--forward", "tcp:" + busy + "=beta:9000"}, []string{"--forward", busy, "in use"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				args := append([]string{"up", "--listen-port", "0", "--control", filepath.Join(t.TempDir(), "s.sock")}, tc.args...)
				out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
					t.Fatalf("wgmesh up %v: %v, want a non-zero exit; output:\n%s", tc.args, err, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("message lacks %q:\n%s", w, out)
					}
				}
			})
		}
	})
}
