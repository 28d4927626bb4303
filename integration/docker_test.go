package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/peerbook"
)

// TestNonRootContainers builds the FROM scratch image with `make image`
// and runs two members as containers with --cap-drop ALL and no devices,
// on a private Docker network: alpha as the README's example does (with
// --user 65534:65534), beta as the image comes (no --user) with a
// read-only root file system and a tmpfs /tmp, as in the README's
// Kubernetes example. Both processes must run as uid 65534 with no
// capabilities, read from /proc. A web server shares beta's network
// namespace; the test fetches it by name through alpha's SOCKS5 proxy,
// published on the host's loopback.
func TestNonRootContainers(t *testing.T) {
	needRoot(t, "docker", "curl", "make")
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("the Docker engine is not running: %v\n%s", err, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	tag := fmt.Sprintf("wgmesh-test-%d", os.Getpid())
	image := tag + ":latest"
	run(t, "make", "-C", "..", "image", "IMAGE="+image)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })
	// The README promises an image that runs as uid 65534 by default.
	if out := strings.TrimSpace(run(t, "docker", "image", "inspect", "-f", "{{.Config.User}}", image)); out != "65534:65534" {
		t.Fatalf("the image's default user is %q, want 65534:65534 (USER in the Dockerfile)", out)
	}

	// The web server image: another static binary, also FROM scratch.
	httpdDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(httpdDir, "httpd"), "./testdata/httpd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build httpd: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(httpdDir, "Dockerfile"), []byte("FROM scratch\nCOPY httpd /httpd\nUSER 65534:65534\nENTRYPOINT [\"/httpd\"]\n"), 0o644)
	httpdImage := tag + "-httpd:latest"
	run(t, "docker", "build", "-q", "-t", httpdImage, httpdDir)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", httpdImage).Run() })

	network := tag
	run(t, "docker", "network", "create", "--subnet", "198.18.90.0/24", network)
	t.Cleanup(func() { exec.Command("docker", "network", "rm", network).Run() })

	// Keys, book and SOCKS credentials, readable by uid 65534 in the
	// containers.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	type ctr struct {
		name string
		ip   netip.Addr
		key  peerbook.PrivateKey
	}
	ctrs := []*ctr{{name: "alpha", ip: netip.MustParseAddr("198.18.90.10")}, {name: "beta", ip: netip.MustParseAddr("198.18.90.11")}}
	book := &peerbook.Book{Format: 1, Serial: 1, Mesh: peerbook.Mesh{Domain: "mesh",
		Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, ListenPort: 51820, MTU: 1420, PersistentKeepalive: 25}}
	for i, c := range ctrs {
		c.key, _ = peerbook.GeneratePrivateKey()
		path := filepath.Join(dir, c.name+".key")
		if err := peerbook.WriteKeyFile(path, c.key); err != nil {
			t.Fatal(err)
		}
		os.Chown(path, 65534, 65534)
		book.Peers = append(book.Peers, peerbook.Peer{Name: c.name, PublicKey: c.key.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})},
			Endpoint:  peerbook.Endpoint{Host: c.ip.String(), Port: 51820}})
	}
	os.WriteFile(filepath.Join(dir, "book.toml"), peerbook.Marshal(book), 0o644)
	auth := filepath.Join(dir, "socks.auth")
	os.WriteFile(auth, []byte("mesh:s3cret-test\n"), 0o600)
	os.Chown(auth, 65534, 65534)

	docker := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(t, append([]string{"docker"}, args...)...))
	}
	common := []string{"run", "-d", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "--network", network, "-v", dir + ":/etc/wgmesh:ro"}
	// Containers are named, so that cleanup also finds one whose start
	// failed after docker created it.
	names := []string{tag + "-beta", tag + "-httpd", tag + "-alpha"}
	t.Cleanup(func() {
		for _, name := range names {
			if t.Failed() {
				out, _ := exec.Command("docker", "logs", name).CombinedOutput()
				t.Logf("container %s:\n%s", name, out)
			}
			exec.Command("docker", "rm", "-f", name).Run()
		}
	})
	docker(append(common, "--name", tag+"-beta", "--ip", ctrs[1].ip.String(),
		"--read-only", "--tmpfs", "/tmp:mode=1777", image,
		"up", "--book", "/etc/wgmesh/book.toml", "--key", "/etc/wgmesh/beta.key",
		"--state-dir", "/tmp/state",
		"--expose", "tcp:80=127.0.0.1:8080")...)
	docker("run", "-d", "--name", tag+"-httpd", "--user", "65534:65534", "--cap-drop", "ALL",
		"--network", "container:"+tag+"-beta", httpdImage, "--listen", "127.0.0.1:8080", "--say", "hello from beta's container")
	docker(append(common, "--name", tag+"-alpha", "--ip", ctrs[0].ip.String(), "--user", "65534:65534",
		"-p", "127.0.0.1::1080", image,
		"up", "--book", "/etc/wgmesh/book.toml", "--key", "/etc/wgmesh/alpha.key",
		"--state-dir", "/tmp/state",
		"--socks", "0.0.0.0:1080", "--socks-auth-file", "/etc/wgmesh/socks.auth")...)
	// One line per published address family; take the IPv4 one.
	hostPort := strings.Split(docker("port", tag+"-alpha", "1080/tcp"), "\n")[0]

	// The processes run as uid and gid 65534, the image's default user
	// too, with no capabilities; the containers hold no devices.
	for _, name := range []string{tag + "-alpha", tag + "-beta"} {
		if out := docker("inspect", "-f", "{{.HostConfig.Devices}}", name); out != "[]" {
			t.Errorf("%s: devices %s", name, out)
		}
		pid := docker("inspect", "-f", "{{.State.Pid}}", name)
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534\n", "Gid:\t65534\t65534\t65534\t65534\n", "CapEff:\t0000000000000000\n", "CapPrm:\t0000000000000000\n"} {
			if !strings.Contains(string(status), want) {
				t.Errorf("%s: the wgmesh process lacks %q in /proc/%s/status:\n%s", name, strings.TrimSpace(want), pid, status)
			}
		}
	}

	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("curl", "-sS", "--max-time", "5",
			"--socks5-hostname", hostPort, "--proxy-user", "mesh:s3cret-test", "http://beta/").CombinedOutput()
		body = strings.TrimSpace(string(out))
		if err == nil && body == "hello from beta's container" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl through alpha's SOCKS5 to beta: %v: %s", err, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
