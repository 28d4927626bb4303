package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/node"
)

// The browser tier of `wgmesh ui`: a real headless Chromium loads the page
// from a running `wgmesh ui` next to two running nodes, the test reads the
// DOM the page's script built, adds a member through the form, and decodes
// the QR code the page shows with zbarimg.

// uiScreenshotEnv names a file the test writes its screenshot to (the
// README's docs/ui.png is made so); without it the screenshot goes to a
// temporary directory.
const uiScreenshotEnv = "WGMESH_UI_SCREENSHOT"

// startUI starts `wgmesh ui` in dir and returns it with the URL its ui=
// line names.
func startUI(t *testing.T, bin, dir string, args ...string) (*proc, string) {
	t.Helper()
	p := &proc{name: "ui", stderr: &testutil.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"ui"}, args...)...)
	p.cmd.Dir = dir
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
			t.Logf("ui stderr:\n%s", p.stderr.String())
		}
	})
	re := regexp.MustCompile(`\bui=(http://127\.0\.0\.1:[0-9]+/)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return p, m[1]
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("wgmesh ui logged no ui= line (exited: %v)\n%s", p.exited(), p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUIStartRefusals(t *testing.T) {
	w := newCLI(t)
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	w.ok("book", "add", "--network", "10.42.0.0/16", "--name", "a", "--public-key", newPublicKey(t), book)
	open := filepath.Join(dir, "open-auth")
	os.WriteFile(open, []byte("admin:pw\n"), 0o644)
	for _, c := range []struct {
		want string
		args []string
	}{
		{"ui needs --book FILE", []string{"ui"}},
		{"--listen 0.0.0.0:0", []string{"ui", "--book", book, "--listen", "0.0.0.0:0"}},
		{"--auth-file", []string{"ui", "--book", book, "--listen", "0.0.0.0:0"}},
		{"permissions 0644 are too open", []string{"ui", "--book", book, "--auth-file", open}},
		{"no-such.toml", []string{"ui", "--book", filepath.Join(dir, "no-such.toml")}},
		{"give a book file's path or an etcd://", []string{"ui", "--book", "https://192.0.2.1/book.toml"}},
		{"--etcd-ca applies to an etcd:// book", []string{"ui", "--book", book, "--etcd-ca", open}},
	} {
		code, _, errOut := w.run(c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("wgmesh %s: exit %d, stderr %q; want a failure naming %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
}

func TestUIBrowser(t *testing.T) {
	w := newCLI(t)
	chromium := testutil.Tool(t, "chromium", "chromium")
	testutil.Tool(t, "zbarimg", "zbar-tools")
	dir := t.TempDir()
	book := filepath.Join(dir, "book.toml")
	key := func(n string) string { return filepath.Join(dir, n+".key") }
	ctl := func(n string) string { return filepath.Join(dir, "run", n, "wgmesh.sock") }
	w.ok("book", "add", "--network", "10.42.0.0/16", "--network", "fd42:42::/64", "--name", "alpha", "--group", "servers", "--new-key", key("alpha"), book)
	w.ok("book", "add", "--name", "beta", "--group", "staff", "--subnet", "192.168.50.0/24", "--new-key", key("beta"), book)

	payload := make([]byte, 256<<10)
	rand.Read(payload)
	srv := payloadServer(t, payload)
	a := startUp(t, w.bin, "alpha", ctl("alpha"), "--book", book, "--key", key("alpha"), "--listen-port", "0", "--expose", "tcp:9000="+srv.String())
	b := startUp(t, w.bin, "beta", ctl("beta"), "--book", book, "--key", key("beta"), "--listen-port", "0", "--forward", "tcp:127.0.0.1:0=alpha:9000")
	for _, p := range []*proc{a, b} {
		port := p.readyAttr(t, "listen_port")
		w.ok("book", "set", "--name", p.name, "--endpoint", "127.0.0.1:"+port, book)
	}
	a.waitReport(t, w.bin, "serial 4", func(r control.Report) bool { return running(r, 4, "beta") })
	b.waitReport(t, w.bin, "serial 4", func(r control.Report) bool { return running(r, 4, "alpha") })
	fwd := boundForward(t, b, "tcp", "alpha:9000")
	download(t, fwd, payload)
	a.waitStatus(t, w.bin, "a direct path to beta", func(st node.Status) bool { return peerStatus(st, "beta").Path == "direct" })

	// In the book's directory, as an admin would run it: the page and the
	// configs it makes name the book as given, book.toml.
	ui, url := startUI(t, w.bin, dir, "--book", "book.toml", "--listen", "127.0.0.1:0", "--control", ctl("alpha"))

	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromium),
			chromedp.NoSandbox, // the tests run as root
			chromedp.DisableGPU,
			chromedp.UserDataDir(filepath.Join(dir, "chromium")),
			chromedp.WindowSize(1360, 900),
		)...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	var console []string
	consoleCtx, stopConsole := context.WithCancel(ctx)
	defer stopConsole()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("chromium: %v", err)
	}
	go func() {
		for m, err := range chromedp.Console(consoleCtx) {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	}()

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, strings.Join(console, "\n"))
		}
	}
	must("load the page", chromedp.Do(ctx,
		chromedp.EmulateViewport(1360, 900),
		chromedp.Navigate(url),
		chromedp.WaitReady(chromedp.CSS(`body[data-ready="yes"]`)),
	))
	names, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#members tbody tr td.name")].map(td => td.textContent)`))
	must("member names", err)
	if strings.Join(names, ",") != "alpha,beta" {
		t.Errorf("member rows %q, want alpha, beta", names)
	}
	// The live view: the script fills in beta's path from alpha's node.
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`document.querySelector('#members tr[data-name="beta"] td.path').textContent === "direct"`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	must(`beta's live path "direct"`, err)
	self, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#members tr[data-name="alpha"] td.path`)))
	must("alpha's row", err)
	if self != "this node" {
		t.Errorf("alpha's path cell %q, want \"this node\"", self)
	}
	// More traffic, so that the sparkline has something to draw: a line of
	// at least 4 points, one a poll of the node.
	for range 3 {
		download(t, fwd, payload)
		time.Sleep(time.Second)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`(document.querySelector('#members tr[data-name="beta"] td.spark polyline')?.getAttribute("points") ?? "").split(" ").length >= 4`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	must("beta's traffic sparkline", err)
	// alpha sent the downloads to beta.
	tx, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#members tr[data-name="beta"] td.tx`)))
	must("beta's tx", err)
	if !strings.HasSuffix(tx, " MiB") {
		t.Errorf("beta's tx cell %q after 1 MiB of downloads", tx)
	}

	// Add a member through the form, without a public key.
	must("add phone", chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`#add-form input[name="name"]`), "phone"),
		chromedp.SendKeys(chromedp.CSS(`#add-form input[name="groups"]`), "staff, phones"),
		chromedp.Click(chromedp.CSS(`#add-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#created`)),
		chromedp.WaitVisible(chromedp.CSS(`#members tr[data-name="phone"]`)),
	))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#created-qr").complete && document.querySelector("#created-qr").naturalWidth > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	must("QR picture loaded", err)
	conf, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#created-config`)))
	must("shown config", err)
	added := loadTestBook(t, book)
	phone, ok := added.PeerByName("phone")
	if !ok || added.Serial != 5 || strings.Join(phone.Groups, ",") != "staff,phones" {
		t.Fatalf("book after the form: serial %d, phone %+v", added.Serial, phone)
	}
	if !strings.Contains(conf, "Address = 10.42.0.3/16, fd42:42::3/64\n") || !strings.Contains(conf, "PrivateKey = ") {
		t.Fatalf("shown config:\n%s", conf)
	}
	// The nodes follow the book the page wrote.
	a.waitReport(t, w.bin, "phone added live", func(r control.Report) bool { return running(r, 5, "beta", "phone") })

	// The QR code as shown on the screen decodes to the config.
	qr, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`#created-qr`)))
	must("screenshot of the QR code", err)
	qrFile := filepath.Join(dir, "qr.png")
	if err := os.WriteFile(qrFile, qr, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := zbarimg(t, qrFile); got != conf {
		t.Errorf("the QR code on the page decodes to\n%s\nwant the shown config\n%s", got, conf)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot", err)
	out := os.Getenv(uiScreenshotEnv)
	if out == "" {
		out = filepath.Join(t.TempDir(), "ui.png")
	}
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(shot))

	// What the page holds after the add, and everything the processes
	// logged: no existing member's private key; the new key only in the
	// one answer that showed it.
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	must("page HTML", err)
	newKey := regexp.MustCompile(`PrivateKey = (\S+)`).FindStringSubmatch(conf)[1]
	for _, k := range []string{readKey(t, key("alpha")), readKey(t, key("beta"))} {
		if strings.Contains(html, k) {
			t.Errorf("an existing member's private key (%s…) is on the page", k[:4])
		}
	}
	for _, p := range []*proc{ui, a, b} {
		if strings.Contains(p.stderr.String(), newKey) {
			t.Errorf("the new member's private key is in the log of %s", p.name)
		}
	}
	if data, _ := os.ReadFile(book); strings.Contains(string(data), newKey) {
		t.Error("the new member's private key is in the book")
	}
	must("forget the shown config", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#created-done`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#created`)),
	))
	html, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	must("page HTML", err)
	if strings.Contains(html, newKey) || strings.Contains(html, base64.StdEncoding.EncodeToString(qr[:16])) {
		t.Error("the new member's private key stays on the page after done")
	}

	// Remove, with its confirmation click.
	must("remove phone", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#members tr[data-name="phone"] button.remove`)),
	))
	if _, ok := loadTestBook(t, book).PeerByName("phone"); !ok {
		t.Fatal("one click removed the member: the confirmation is missing")
	}
	must("confirm removal", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#members tr[data-name="phone"] button.remove`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#members tr[data-name="phone"]`)),
	))
	if _, ok := loadTestBook(t, book).PeerByName("phone"); ok {
		t.Fatal("phone still in the book after the confirmed removal")
	}

	// Change a member through its edit form.
	must("edit beta", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#members tr[data-name="beta"] button.edit`)),
		chromedp.WaitVisible(chromedp.CSS(`#edit`)),
		chromedp.SetValue(chromedp.CSS(`#edit-form input[name="groups"]`), "staff, eu"),
		chromedp.Click(chromedp.CSS(`#edit-form button[type="submit"]`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#edit`)),
	))
	if beta, _ := loadTestBook(t, book).PeerByName("beta"); strings.Join(beta.Groups, ",") != "staff,eu" {
		t.Errorf("beta's groups after the edit form: %q", beta.Groups)
	}

	// A book the node refuses: the page says so, with the node's reason.
	data, err := os.ReadFile(book)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(book, append(data, "\n[[peer]]\nname = \"broken\"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	must("refused book shown", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#rejection`))))
	why, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#rejection-error`)))
	must("refusal reason", err)
	if !strings.Contains(why, "book.toml:") || !strings.Contains(why, "broken") {
		t.Errorf("refusal shown as %q", why)
	}

	mu.Lock()
	for _, m := range console {
		if strings.Contains(m, "Content Security Policy") || strings.HasPrefix(m, "exception") {
			t.Errorf("browser console: %s", m)
		}
	}
	mu.Unlock()
}
