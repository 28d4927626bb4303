// Command etcdfleet measures a fleet following its book in etcd: it starts
// a 3-member etcd cluster on loopback (Debian's etcd-server), stores a
// book of -members members, starts -nodes `wgmesh up` processes (netstack
// mode) that follow it, then makes -changes changes one at a time (a
// member's endpoint moved) and measures, for every node, the time from
// just before the change was sent to the node's "book reloaded" log line.
// It prints the median and p99 over every node and change, the median and
// p99 of the slowest node per change, and each node's RSS and idle CPU
// (utime+stime over -idle).
//
//	go run ./bench/etcdfleet -wgmesh bin/wgmesh [-members 1000] [-nodes 10] [-changes 30]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/etcdtest"
	"github.com/wgmesh/wgmesh/peerbook"
)

func main() {
	bin := flag.String("wgmesh", "bin/wgmesh", "wgmesh binary")
	members := flag.Int("members", 1000, "members in the book")
	nodes := flag.Int("nodes", 10, "wgmesh up processes following the book")
	changes := flag.Int("changes", 30, "changes to time")
	idle := flag.Duration("idle", 10*time.Second, "idle window for CPU")
	flag.Parse()
	if err := run(*bin, *members, *nodes, *changes, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "etcdfleet:", err)
		os.Exit(1)
	}
}

type node struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen map[uint64]time.Time // serial → when its reload was logged
}

var reloadRE = regexp.MustCompile(`time=(\S+) level=INFO msg="book reloaded" .*serial=(\d+) `)

func (n *node) follow(f *os.File) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := reloadRE.FindStringSubmatch(sc.Text()); m != nil {
			ts, err1 := time.Parse(time.RFC3339Nano, m[1])
			s, err2 := strconv.ParseUint(m[2], 10, 64)
			if err1 == nil && err2 == nil {
				n.mu.Lock()
				n.seen[s] = ts
				n.mu.Unlock()
			}
		}
	}
}

func (n *node) when(serial uint64) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.seen[serial]
	return t, ok
}

func run(bin string, members, nodes, changes int, idle time.Duration) error {
	dir, err := os.MkdirTemp("", "wgmesh-etcdfleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cluster, err := etcdtest.Start(filepath.Join(dir, "etcd"), 3)
	if err != nil {
		return err
	}
	defer cluster.Stop()

	// The book: nodes n00.. with keys on disk and loopback endpoints
	// (ports the system picks are unknown, so they get fixed ones), the
	// rest offline members behind NAT.
	book := &peerbook.Book{Format: peerbook.CurrentFormat, Serial: 1, Mesh: peerbook.Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.40.0.0/16")},
		ListenPort: 51820, MTU: 1420, PersistentKeepalive: 25}}
	keyPaths := make([]string, nodes)
	for i := 0; i < members; i++ {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			return err
		}
		p := peerbook.Peer{Name: fmt.Sprintf("m%04d", i), PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 40, byte((i + 1) >> 8), byte(i + 1)})}}
		if i < nodes {
			p.Name = fmt.Sprintf("n%02d", i)
			p.Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: uint16(42000 + i)}
			keyPaths[i] = filepath.Join(dir, p.Name+".key")
			if err := peerbook.WriteKeyFile(keyPaths[i], k); err != nil {
				return err
			}
		}
		book.Peers = append(book.Peers, p)
	}
	url := cluster.URL("bench/fleet")
	t, _ := etcdbook.ParseURL(url)
	store, err := etcdbook.Connect(t, etcdbook.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	ctx := context.Background()
	if err := store.Push(ctx, book, nil, false); err != nil {
		return err
	}

	var ns []*node
	for i := 0; i < nodes; i++ {
		n := &node{name: fmt.Sprintf("n%02d", i), seen: map[uint64]time.Time{}}
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		n.cmd = exec.Command(bin, "up", "--book", url, "--key", keyPaths[i], "--state-dir", filepath.Join(dir, "state", n.name),
			"--control", filepath.Join(dir, "run", n.name, "wgmesh.sock"))
		n.cmd.Stderr = w
		if err := n.cmd.Start(); err != nil {
			return err
		}
		w.Close()
		go n.follow(r)
		defer func() { n.cmd.Process.Kill(); n.cmd.Wait() }()
		ns = append(ns, n)
	}
	// Ready: each has logged its first reload? No: the first book is
	// applied at start; wait for each control socket to answer.
	for _, n := range ns {
		deadline := time.Now().Add(60 * time.Second)
		for exec.Command(bin, "status", "--control", filepath.Join(dir, "run", n.name, "wgmesh.sock")).Run() != nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not up within 60 s", n.name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)

	var all, slowest []time.Duration
	var commits []time.Duration
	serial := book.Serial
	for c := 0; c < changes; c++ {
		target := fmt.Sprintf("m%04d", nodes+c%(members-nodes))
		ep := peerbook.Endpoint{Host: "127.0.0.2", Port: uint16(10000 + c)}
		start := time.Now()
		if _, err := store.Update(ctx, func(b *peerbook.Book) (*peerbook.Book, error) {
			return peerbook.SetMember(b, target, peerbook.Change{Endpoint: &ep})
		}, nil); err != nil {
			return err
		}
		commits = append(commits, time.Since(start))
		serial++
		var worst time.Duration
		for _, n := range ns {
			deadline := time.Now().Add(30 * time.Second)
			for {
				if ts, ok := n.when(serial); ok {
					d := ts.Sub(start)
					all = append(all, d)
					worst = max(worst, d)
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s did not apply serial %d within 30 s", n.name, serial)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		slowest = append(slowest, worst)
		time.Sleep(200 * time.Millisecond)
	}

	// Idle cost, after the changes.
	time.Sleep(2 * time.Second)
	before := make([]float64, len(ns))
	for i, n := range ns {
		before[i] = cpuSeconds(n.cmd.Process.Pid)
	}
	time.Sleep(idle)
	var cpus, rss []float64
	for i, n := range ns {
		cpus = append(cpus, 100*(cpuSeconds(n.cmd.Process.Pid)-before[i])/idle.Seconds())
		rss = append(rss, rssMB(n.cmd.Process.Pid))
	}

	fmt.Printf("etcd fleet: %d members in etcd, %d wgmesh up nodes following, %d changes\n", members, nodes, changes)
	fmt.Printf("commit (Update, one member's endpoint):   median %v  p99 %v\n", pct(commits, 50), pct(commits, 99))
	fmt.Printf("applied, every node and change (%d):     median %v  p99 %v\n", len(all), pct(all, 50), pct(all, 99))
	fmt.Printf("applied by all %d nodes, per change:      median %v  p99 %v\n", nodes, pct(slowest, 50), pct(slowest, 99))
	fmt.Printf("idle per node over %v: CPU median %.2f %% of a core (max %.2f), RSS median %.0f MB (max %.0f)\n",
		idle, fpct(cpus, 50), slices.Max(cpus), fpct(rss, 50), slices.Max(rss))
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))].Round(time.Millisecond)
}

func fpct(fs []float64, p int) float64 {
	s := slices.Clone(fs)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// cpuSeconds is utime+stime of pid.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
