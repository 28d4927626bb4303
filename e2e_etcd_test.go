package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/etcdtest"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// End-to-end tests of the book in etcd: a real 3-member etcd cluster,
// started once for the package by the first test that needs it and
// stopped in TestMain, and `wgmesh up` processes following it.

// etcdShared is the package's cluster, started by the first test that
// needs it.
var etcdShared = etcdtest.Shared{Name: "e2e"}

func TestMain(m *testing.M) { os.Exit(etcdShared.Run(m)) }

// needEtcd returns the package's cluster with every member running; a
// missing etcd skips the test (fails it on CI).
func needEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	c := etcdShared.Need(t)
	// A test that stopped members leaves them running again.
	for i, m := range c.Members {
		if !m.Running() {
			if err := c.Restart(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// startEtcdMesh pushes a book of names to a fresh prefix of cluster
// (named after what) and starts `wgmesh up` for each, on ephemeral ports:
// the first gets its endpoint in the book once it listens, the others
// have none. It returns the book's URL and the processes, all listening.
func startEtcdMesh(t *testing.T, cluster *etcdtest.Cluster, bin, what string, names ...string) (string, []*proc) {
	t.Helper()
	r := newCLI(t)
	dir := t.TempDir()
	url := cluster.URL(fmt.Sprintf("e2e/%s-%d", what, time.Now().UnixNano()))
	ms := newMembers(t, dir, names...)
	bookPath := filepath.Join(dir, "book.toml")
	writeBook(t, bookPath, 1, ms)
	if code, _, errOut := r.run("book", "push", bookPath, url); code != 0 {
		t.Fatal(errOut)
	}
	listening := func(st node.Status) bool { return st.ListenPort != 0 }
	var procs []*proc
	for i, m := range ms {
		p := startUp(t, bin, m.name, filepath.Join(dir, "run", m.name, "wgmesh.sock"),
			"--book", url, "--key", m.keyPath, "--listen-port", "0", "--state-dir", filepath.Join(dir, "state", m.name))
		st := p.waitStatus(t, bin, "start-up", listening)
		if i == 0 {
			if code, _, errOut := r.run("book", "set", "--name", m.name, "--endpoint", fmt.Sprintf("127.0.0.1:%d", st.ListenPort), url); code != 0 {
				t.Fatal(errOut)
			}
		}
		procs = append(procs, p)
	}
	return url, procs
}

// reloadedAt waits for p to log `book reloaded ... serial=N` and returns
// the time it logged.
func reloadedAt(t *testing.T, p *proc, serial uint64, wait time.Duration) time.Time {
	t.Helper()
	re := regexp.MustCompile(`time=(\S+) level=INFO msg="book reloaded" .*serial=` + fmt.Sprint(serial) + `\b`)
	deadline := time.Now().Add(wait)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatal(err)
			}
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reload serial %d within %v", p.name, serial, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEtcdFleet(t *testing.T) {
	cluster := needEtcd(t)
	bin := buildBinary(t)
	r := newCLI(t)
	dir := t.TempDir()
	url := cluster.URL(fmt.Sprintf("e2e/fleet-%d", time.Now().UnixNano()))
	ms := newMembers(t, dir, "alpha", "beta", "gamma")
	bookPath := filepath.Join(dir, "book.toml")
	writeBook(t, bookPath, 1, ms)

	// push, a second push refused, pull gives the same book.
	if code, out, errOut := r.run("book", "push", bookPath, url); code != 0 || !strings.Contains(out, "pushed") {
		t.Fatalf("push: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := r.run("book", "push", bookPath, url); code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("second push without --force: exit %d, %s", code, errOut)
	}
	code, pulled, errOut := r.run("book", "pull", url)
	if code != 0 {
		t.Fatalf("pull: %s", errOut)
	}
	want, _ := peerbook.Load(bookPath)
	got, err := peerbook.Parse("pulled", []byte(pulled))
	if err != nil || !sameBookTest(want, got) {
		t.Fatalf("pulled book differs (%v):\n%s", err, pulled)
	}

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	payloadAddr := payloadServer(t, payload)
	ctl := func(name string) string { return filepath.Join(dir, "run", name, "wgmesh.sock") }
	upArgs := func(m *testMember) []string {
		return []string{"--book", url, "--key", m.keyPath, "--listen-port", "0", "--state-dir", filepath.Join(dir, "state", m.name)}
	}
	alpha := startUp(t, bin, "alpha", ctl("alpha"), append(upArgs(ms[0]), "--forward", "tcp:127.0.0.1:0=beta:9000")...)
	beta := startUp(t, bin, "beta", ctl("beta"), append(upArgs(ms[1]), "--expose", "tcp:9000="+payloadAddr.String())...)
	gamma := startUp(t, bin, "gamma", ctl("gamma"), upArgs(ms[2])...)
	procs := []*proc{alpha, beta, gamma}
	for i, p := range procs {
		st := p.waitStatus(t, bin, "start-up", func(st node.Status) bool { return st.ListenPort != 0 })
		ms[i].port = st.ListenPort
	}
	fwd := boundForward(t, alpha, "tcp", "beta:9000")

	// Each node's endpoint is set with book set, through etcd.
	for _, m := range ms {
		if code, out, errOut := r.run("book", "set", "--name", m.name, "--endpoint", fmt.Sprintf("127.0.0.1:%d", m.port), url); code != 0 {
			t.Fatalf("set endpoint of %s: %s %s", m.name, out, errOut)
		}
	}
	allEndpoints := func(st node.Status) bool {
		for _, ps := range st.Peers {
			if ps.Endpoint == "" {
				return false
			}
		}
		return st.BookSerial == 4 && len(st.Peers) == 2
	}
	for _, p := range procs {
		p.waitStatus(t, bin, "serial 4 with every endpoint", allEndpoints)
	}
	download(t, fwd, payload)

	store := openTestStore(t, url)
	serial := uint64(4)
	// change makes one change in etcd and waits until every running node
	// applied it; it returns the slowest node's time from before the
	// change was sent to its log line.
	change := func(what string, f func(*peerbook.Book) (*peerbook.Book, error), procs ...*proc) time.Duration {
		t.Helper()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := store.Update(ctx, f, nil); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		committed := time.Since(start)
		serial++
		var slowest time.Duration
		for _, p := range procs {
			if d := reloadedAt(t, p, serial, 30*time.Second).Sub(start); d > slowest {
				slowest = d
			}
		}
		t.Logf("%s: committed in %v, applied by all %d nodes %v after the change was sent", what, committed.Round(time.Millisecond), len(procs), slowest.Round(time.Millisecond))
		return slowest
	}
	newKey := func() peerbook.Key {
		k, err := peerbook.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.Public()
	}

	t.Run("member added, seen by all", func(t *testing.T) {
		d := change("add delta", func(b *peerbook.Book) (*peerbook.Book, error) {
			return peerbook.AddMember(b, peerbook.Member{Name: "delta", PublicKey: newKey()})
		}, procs...)
		fmt.Printf("etcd propagation of one added member to 3 nodes: %v\n", d.Round(time.Millisecond))
		// The clock of the log lines is the same machine's, but a loaded
		// machine can stall; a second is the target, five the bound.
		if d > 5*time.Second {
			t.Fatalf("propagation took %v", d)
		}
	})

	t.Run("leader killed, change still applied", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		leader, err := cluster.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cluster.Kill(leader)
		t.Logf("killed etcd leader %s with SIGKILL", cluster.Members[leader].Name)
		if code, out, errOut := r.run("book", "set", "--name", "delta", "--endpoint", "127.0.0.1:9", url); code != 0 {
			t.Fatalf("set after the leader died: %s %s", out, errOut)
		}
		serial++
		for _, p := range procs {
			reloadedAt(t, p, serial, 30*time.Second)
		}
		if err := cluster.Restart(leader); err != nil {
			t.Fatal(err)
		}
		if err := cluster.WaitHealthy(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("corrupted record refused, old book stays", func(t *testing.T) {
		ctx := context.Background()
		key := store.Target().Prefix + etcdbook.MemberKey("delta")
		if _, err := store.Client().Put(ctx, key, "[[peer]]\nname = \"delta\"\npublic_key = \"garbage\"\n"); err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			deadline := time.Now().Add(20 * time.Second)
			for {
				rep, err := p.report(t, bin)
				if err == nil && rep.LastRejection != nil {
					if !strings.Contains(rep.LastRejection.Error, "records do not match the head") || rep.BookSerial != serial {
						t.Fatalf("%s: rejection %q, serial %d (want %d)", p.name, rep.LastRejection.Error, rep.BookSerial, serial)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s shows no rejection (%v)", p.name, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		download(t, fwd, payload)
		// Membership commands refuse to build on a refused book; a push
		// of a good book with a higher serial repairs it.
		if code, _, errOut := r.run("book", "remove", "--name", "delta", url); code == 0 || !strings.Contains(errOut, "records do not match") {
			t.Fatalf("remove on a corrupted book: exit %d, %s", code, errOut)
		}
		serial++
		writeBook(t, bookPath, serial, ms)
		if code, out, errOut := r.run("book", "push", "--force", bookPath, url); code != 0 {
			t.Fatalf("push --force: %s %s", out, errOut)
		}
		for _, p := range procs {
			reloadedAt(t, p, serial, 30*time.Second)
			if rep, err := p.report(t, bin); err != nil || rep.LastRejection != nil {
				t.Fatalf("%s after the repair: %v %+v", p.name, err, rep.LastRejection)
			}
		}
	})

	t.Run("etcd down: nodes forward, a node restarts from its cache", func(t *testing.T) {
		cluster.Stop()
		download(t, fwd, payload)
		gamma.cmd.Process.Signal(syscall.SIGTERM)
		<-gamma.done
		gamma2 := startUp(t, bin, "gamma2", ctl("gamma"), upArgs(ms[2])...)
		gamma2.waitStatus(t, bin, "start from the cache", func(st node.Status) bool { return st.BookSerial == serial && len(st.Peers) == 2 })
		if !strings.Contains(gamma2.stderr.String(), "starting from the cached book") {
			t.Errorf("gamma2 did not say it started from the cache:\n%s", gamma2.stderr.String())
		}
		// etcd back: every node, the restarted one included, follows
		// the next change.
		for i := range cluster.Members {
			if err := cluster.Restart(i); err != nil {
				t.Fatal(err)
			}
		}
		if err := cluster.WaitHealthy(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		change("add epsilon after etcd came back", func(b *peerbook.Book) (*peerbook.Book, error) {
			return peerbook.AddMember(b, peerbook.Member{Name: "epsilon", PublicKey: newKey()})
		}, alpha, beta, gamma2)
		download(t, fwd, payload)
	})

	// No private key in anything the commands printed.
	for _, m := range ms {
		if strings.Contains(r.all.String(), m.key.Encode()) {
			t.Fatalf("a command printed %s's private key", m.name)
		}
	}
}

// sameBookTest compares what two books configure.
func sameBookTest(a, b *peerbook.Book) bool {
	if a.Serial != b.Serial || !a.Mesh.Equal(&b.Mesh) || len(a.Peers) != len(b.Peers) {
		return false
	}
	for i := range a.Peers {
		q, ok := b.PeerByName(a.Peers[i].Name)
		if !ok || !a.Peers[i].Equal(q) {
			return false
		}
	}
	return true
}

func openTestStore(t *testing.T, url string) *etcdbook.Store {
	t.Helper()
	tg, err := etcdbook.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdbook.Connect(tg, etcdbook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// 20 concurrent `book add` processes: every one lands, each with its own
// address, and the serial counts them all.
func TestEtcdConcurrentBookAdds(t *testing.T) {
	cluster := needEtcd(t)
	r := newCLI(t)
	dir := t.TempDir()
	url := cluster.URL(fmt.Sprintf("e2e/adds-%d", time.Now().UnixNano()))
	ms := newMembers(t, dir, "first")
	bookPath := filepath.Join(dir, "book.toml")
	writeBook(t, bookPath, 1, ms)
	if code, _, errOut := r.run("book", "push", bookPath, url); code != 0 {
		t.Fatal(errOut)
	}
	const n = 20
	var wg sync.WaitGroup
	outs := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(r.bin, "book", "add", "--name", fmt.Sprintf("m%02d", i), "--new-key", filepath.Join(dir, fmt.Sprintf("m%02d.key", i)), url)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("add %d: %v\n%s", i, err, out)
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	code, pulled, errOut := r.run("book", "pull", url)
	if code != 0 {
		t.Fatal(errOut)
	}
	b, err := peerbook.Parse("pulled", []byte(pulled))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Peers) != n+1 || b.Serial != n+1 {
		t.Fatalf("%d members, serial %d; want %d, %d", len(b.Peers), b.Serial, n+1, n+1)
	}
	var addrs []string
	for _, p := range b.Peers {
		for _, a := range p.Addresses {
			addrs = append(addrs, a.String())
		}
	}
	slices.Sort(addrs)
	if len(slices.Compact(addrs)) != 2*(n+1) {
		t.Fatalf("addresses not distinct: %v", addrs)
	}
}

// With etcd's authentication on, a command without credentials is
// refused and one with an auth file of a user whose role covers the
// prefix works; a user without that role is refused.
func TestEtcdAuth(t *testing.T) {
	cluster := needEtcd(t)
	r := newCLI(t)
	dir := t.TempDir()
	prefix := fmt.Sprintf("e2e/auth-%d", time.Now().UnixNano())
	url := cluster.URL(prefix)
	ms := newMembers(t, dir, "one")
	bookPath := filepath.Join(dir, "book.toml")
	writeBook(t, bookPath, 1, ms)

	admin := openTestStore(t, url).Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.UserAdd(ctx, "root", "rootpw"))
	must(admin.UserGrantRole(ctx, "root", "root"))
	must(admin.RoleAdd(ctx, "wgmesh"))
	must(admin.RoleGrantPermission(ctx, "wgmesh", "/"+prefix+"/", clientv3.GetPrefixRangeEnd("/"+prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite)))
	must(admin.UserAdd(ctx, "fleet", "fleetpw"))
	must(admin.UserGrantRole(ctx, "fleet", "wgmesh"))
	must(admin.UserAdd(ctx, "other", "otherpw"))
	must(admin.AuthEnable(ctx))
	t.Cleanup(func() {
		root := openAuthStore(t, url, dir, "root:rootpw")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := root.Client().AuthDisable(ctx); err != nil {
			t.Errorf("disabling auth again: %v", err)
		}
		for _, u := range []string{"fleet", "other", "root"} {
			root.Client().UserDelete(ctx, u)
		}
		root.Client().RoleDelete(ctx, "wgmesh")
	})

	if code, _, errOut := r.run("book", "push", bookPath, url); code == 0 {
		t.Fatal("push without credentials worked with auth on")
	} else {
		t.Logf("without credentials: %s", strings.TrimSpace(errOut))
	}
	authFile := func(name, line string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fleet := authFile("fleet.auth", "fleet:fleetpw")
	other := authFile("other.auth", "other:otherpw")
	if code, _, errOut := r.run("book", "push", "--etcd-auth-file", other, bookPath, url); code == 0 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("push as a user without the role: exit %d, %s", code, errOut)
	}
	if code, out, errOut := r.run("book", "push", "--etcd-auth-file", fleet, bookPath, url); code != 0 {
		t.Fatalf("push as fleet: %s %s", out, errOut)
	}
	if code, out, errOut := r.run("book", "add", "--etcd-auth-file", fleet, "--name", "two", "--new-key", filepath.Join(dir, "two.key"), url); code != 0 || !strings.Contains(out, "serial 2") {
		t.Fatalf("add as fleet: %s %s", out, errOut)
	}
	// The auth file must be private, and its content never shows.
	loose := filepath.Join(dir, "loose.auth")
	os.WriteFile(loose, []byte("fleet:fleetpw\n"), 0o644)
	if code, _, errOut := r.run("book", "check", "--etcd-auth-file", loose, url); code == 0 || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("a world-readable auth file: exit %d, %s", code, errOut)
	}
	if strings.Contains(r.all.String(), "fleetpw") || strings.Contains(r.all.String(), "otherpw") {
		t.Fatal("a password was printed")
	}
}

func openAuthStore(t *testing.T, url, dir, line string) *etcdbook.Store {
	t.Helper()
	p := filepath.Join(dir, "root.auth")
	if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, _ := etcdbook.ParseURL(url)
	s, err := etcdbook.Connect(tg, etcdbook.Options{AuthFile: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// invite over etcd: the invitation is single-use (of two machines joining
// with it at once exactly one gets in) and expires; the file holds no
// private key, and the member appears only when it joins.
func TestEtcdInviteJoin(t *testing.T) {
	cluster := needEtcd(t)
	r := newCLI(t)
	dir := t.TempDir()
	url := cluster.URL(fmt.Sprintf("e2e/invite-%d", time.Now().UnixNano()))
	ms := newMembers(t, dir, "first")
	bookPath := filepath.Join(dir, "book.toml")
	writeBook(t, bookPath, 1, ms)
	if code, _, errOut := r.run("book", "push", bookPath, url); code != 0 {
		t.Fatal(errOut)
	}
	inv := filepath.Join(dir, "laptop.invite")
	if code, out, errOut := r.run("invite", "--name", "laptop", "--group", "staff", "--out", inv, url); code != 0 || !strings.Contains(out, "single use") {
		t.Fatalf("invite: %d %s %s", code, out, errOut)
	}
	text, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(text), "private_key") {
		t.Fatalf("an etcd invitation holds a private key:\n%s", text)
	}
	if code, pulled, _ := r.run("book", "pull", url); code != 0 || strings.Contains(pulled, "laptop") {
		t.Fatalf("the member is in the book before it joined:\n%s", pulled)
	}

	// Two machines join with the same invitation at once.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	outs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command(r.bin, "join", "--out", filepath.Join(dir, fmt.Sprintf("machine%d", i)), inv).CombinedOutput()
			outs[i] = string(out)
			if ee, ok := err.(*exec.ExitError); ok {
				codes[i] = ee.ExitCode()
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	won := slices.Index(codes, 0)
	if won < 0 || codes[1-won] == 0 || !strings.Contains(outs[1-won], "used already or expired") {
		t.Fatalf("two joins with one invitation: exits %v\n%s\n%s", codes, outs[0], outs[1])
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("machine%d", 1-won), "node.key")); err == nil {
		t.Error("the refused join left a key behind")
	}
	key, err := peerbook.ReadKeyFile(filepath.Join(dir, fmt.Sprintf("machine%d", won), "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	_, pulled, _ := r.run("book", "pull", url)
	b, err := peerbook.Parse("pulled", []byte(pulled))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := b.PeerByName("laptop")
	if !ok || p.PublicKey != key.Public() || !slices.Equal(p.Groups, []string{"staff"}) || b.Serial != 2 {
		t.Fatalf("after join: %+v, serial %d", p, b.Serial)
	}
	conf, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("machine%d", won), "wgmesh.toml"))
	if err != nil || !strings.Contains(string(conf), url) {
		t.Fatalf("config: %v\n%s", err, conf)
	}

	// An invitation that expired is gone.
	inv2 := filepath.Join(dir, "phone.invite")
	if code, _, errOut := r.run("invite", "--name", "phone", "--ttl", "1s", "--out", inv2, url); code != 0 {
		t.Fatal(errOut)
	}
	// The file's own expiry is checked first; make it say later, so that
	// the lease in etcd is what refuses.
	data, _ := os.ReadFile(inv2)
	data = regexp.MustCompile(`expires = \S+`).ReplaceAll(data, []byte("expires = "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	os.WriteFile(inv2, data, 0o600)
	time.Sleep(3 * time.Second)
	if code, out, errOut := r.run("join", "--out", filepath.Join(dir, "phone"), inv2); code == 0 || !strings.Contains(errOut, "used already or expired") {
		t.Fatalf("join after the lease expired: %d %s %s", code, out, errOut)
	}
}

// Observed endpoints in etcd: alpha has an endpoint, beta and gamma are
// "behind NAT" (none in the book) and the book has no registry member;
// alpha publishes what it observes of them, gamma finds beta through etcd
// and reaches it directly. When alpha dies its lease expires and its
// entries go.
func TestEtcdObservedEndpoints(t *testing.T) {
	cluster := needEtcd(t)
	bin := buildBinary(t)
	url, procs := startEtcdMesh(t, cluster, bin, "endpoints", "alpha", "beta", "gamma")
	alpha, beta, gamma := procs[0], procs[1], procs[2]
	betaPort := beta.waitStatus(t, bin, "start-up", func(st node.Status) bool { return st.ListenPort != 0 }).ListenPort

	want := fmt.Sprintf("127.0.0.1:%d", betaPort)
	gamma.waitStatus(t, bin, "beta found through etcd and reached", func(st node.Status) bool {
		for _, ps := range st.Peers {
			if ps.Name == "beta" && ps.Endpoint == want && !ps.LastHandshake.IsZero() {
				return true
			}
		}
		return false
	})
	// Whichever of the two looked the other up first reached it; the
	// other then learned the endpoint from the handshake.
	if !strings.Contains(gamma.stderr.String(), `msg="member endpoint from registry" peer=beta registry=etcd://`) &&
		!strings.Contains(beta.stderr.String(), `msg="member endpoint from registry" peer=gamma registry=etcd://`) {
		t.Errorf("neither beta nor gamma logged the other's endpoint from etcd:\n%s\n%s", beta.stderr.String(), gamma.stderr.String())
	}

	// alpha's entries live under its lease: SIGKILL, and they expire.
	store := openTestStore(t, url)
	prefix := store.Target().Prefix + etcdbook.EndpointsDir
	count := func() int {
		resp, err := store.Client().Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return int(resp.Count)
	}
	if n := count(); n == 0 {
		t.Fatal("no endpoints published")
	}
	alpha.cmd.Process.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(etcdbook.DefaultEndpointTTL + 10*time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("alpha's endpoints still in etcd %v after it died", etcdbook.DefaultEndpointTTL+10*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
