package packaging

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree copies the repository's files (tracked, and new ones not
// ignored) to dir, as a second checkout somewhere else would have them.
func copyTree(t *testing.T, dir string) {
	t.Helper()
	list := run(t, "..", nil, "git", "ls-files", "-z", "-co", "--exclude-standard")
	cmd := exec.Command("sh", "-c", `tar --null -T - -cf - | tar -C "$0" -xf -`, dir)
	cmd.Dir = ".."
	cmd.Stdin = strings.NewReader(list)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
}

// TestReleaseReproducible builds the linux/amd64 and windows/amd64
// archives from two copies of the tree in different directories: the
// bytes are the same, the binaries hold no local path, SHA256SUMS lists
// them and the archives hold what the script promises.
func TestReleaseReproducible(t *testing.T) {
	testutil.Tool(t, "zip", "zip")
	testutil.Tool(t, "git", "git")
	var sums [2][]byte
	var outs [2]string
	for i := range 2 {
		src := filepath.Join(t.TempDir(), "checkout-"+string(rune('a'+i)))
		os.MkdirAll(src, 0o755)
		copyTree(t, src)
		outs[i] = t.TempDir()
		// The copies have no .git: the version and time come from here.
		run(t, src, []string{"OUT=" + outs[i], "PLATFORMS=linux/amd64 windows/amd64", "VERSION=1.2.3-test", "SOURCE_DATE_EPOCH=1700000000"},
			"sh", "packaging/release.sh")
		var err error
		if sums[i], err = os.ReadFile(filepath.Join(outs[i], "SHA256SUMS")); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Errorf("two builds of one tree differ:\n%s\n%s", sums[0], sums[1])
	}
	if !bytes.Contains(sums[0], []byte("  wgmesh-1.2.3-test-linux-amd64.tar.gz\n")) || !bytes.Contains(sums[0], []byte("  wgmesh-1.2.3-test-windows-amd64.zip\n")) {
		t.Errorf("SHA256SUMS:\n%s", sums[0])
	}
	if out := run(t, outs[0], nil, "sha256sum", "-c", "SHA256SUMS"); strings.Count(out, ": OK") != 2 {
		t.Errorf("sha256sum -c: %s", out)
	}

	files := map[string][]byte{}
	f, err := os.Open(filepath.Join(outs[0], "wgmesh-1.2.3-test-linux-amd64.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 1700000000 {
			t.Errorf("%s: owner %d:%d time %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		b, _ := io.ReadAll(tr)
		files[strings.TrimPrefix(h.Name, "wgmesh-1.2.3-test-linux-amd64/")] = b
	}
	for _, want := range []string{"wgmesh", "wgmesh.1", "README.md", "home.toml", "completion/wgmesh.bash", "completion/_wgmesh",
		"completion/wgmesh.fish", "systemd/wgmesh@.service", "systemd/wgmesh-tun@.service", "systemd/wgmesh.sysusers"} {
		if len(files[want]) == 0 {
			t.Errorf("linux archive: no %s", want)
		}
	}
	home, _ := os.UserHomeDir()
	wd, _ := os.Getwd()
	modcache := strings.TrimSpace(run(t, "", nil, "go", "env", "GOMODCACHE"))
	for _, p := range []string{filepath.Dir(wd), modcache, home + "/", os.TempDir() + "/"} {
		if bytes.Contains(files["wgmesh"], []byte(p)) {
			t.Errorf("the binary holds the local path %s", p)
		}
	}
	bin := filepath.Join(t.TempDir(), "wgmesh")
	os.WriteFile(bin, files["wgmesh"], 0o755)
	if out := run(t, "", nil, bin, "version"); !strings.HasPrefix(out, "wgmesh 1.2.3-test\n") {
		t.Errorf("version of the release binary:\n%s", out)
	}

	z, err := zip.OpenReader(filepath.Join(outs[0], "wgmesh-1.2.3-test-windows-amd64.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	var exe bool
	for _, f := range z.File {
		exe = exe || f.Name == "wgmesh-1.2.3-test-windows-amd64/wgmesh.exe"
	}
	if !exe {
		t.Error("windows archive: no wgmesh.exe")
	}
}
