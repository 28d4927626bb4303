package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/ui"
)

// Two nodes follow a book in etcd and publish their views there; `wgmesh
// ui` on the same book serves the mesh matrix, which shows "direct" both
// ways once they have met, and changes the book in etcd.
func TestUIEtcdMatrix(t *testing.T) {
	cluster := needEtcd(t)
	bin := buildBinary(t)
	url, procs := startEtcdMesh(t, cluster, bin, "matrix", "alpha", "beta")
	alpha, beta := procs[0], procs[1]
	r := newCLI(t)
	dir := t.TempDir()

	_, base := startUI(t, bin, dir, "--book", url, "--listen", "127.0.0.1:0")
	matrix := func() (ui.Matrix, error) {
		var m ui.Matrix
		resp, err := http.Get(base + "api/matrix")
		if err != nil {
			return m, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return m, fmt.Errorf("GET /api/matrix: %s", resp.Status)
		}
		return m, json.NewDecoder(resp.Body).Decode(&m)
	}
	path := func(m ui.Matrix, from, to string) string {
		for _, row := range m.Rows {
			for _, c := range row.Cells {
				if row.Name == from && c.Name == to {
					return c.Path
				}
			}
		}
		return "(missing)"
	}
	var m ui.Matrix
	var err error
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, err = matrix()
		if err == nil && path(m, "alpha", "beta") == "direct" && path(m, "beta", "alpha") == "direct" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("matrix never showed direct both ways: %+v, %v\nalpha:\n%s\nbeta:\n%s", m, err, alpha.stderr.String(), beta.stderr.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if strings.Join(m.Members, ",") != "alpha,beta" || path(m, "alpha", "alpha") != "self" {
		t.Errorf("matrix = %+v", m)
	}

	// In a browser, the page's script draws the same matrix: green
	// "direct" cells both ways.
	chromium := testutil.Tool(t, "chromium", "chromium")
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromium),
			chromedp.NoSandbox, // the tests run as root
			chromedp.DisableGPU,
			chromedp.UserDataDir(filepath.Join(dir, "chromium")),
		)...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitReady(chromedp.CSS(`body[data-ready="yes"]`))); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	for _, pair := range [][2]string{{"alpha", "beta"}, {"beta", "alpha"}} {
		cell := fmt.Sprintf(`document.querySelector('#matrix-table tr[data-name="%s"] td[data-to="%s"]')`, pair[0], pair[1])
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cell+`?.textContent === "direct" && `+cell+`.classList.contains("path-direct")`,
			chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("matrix cell %s → %s not a green \"direct\" on the page: %v", pair[0], pair[1], err)
		}
	}

	// The page has the matrix; a member added through the API lands in
	// etcd (the transaction of book add) and shows as a row with no
	// report.
	resp, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); !strings.Contains(page, `id="matrix"`) {
		t.Fatalf("page has no matrix:\n%s", page)
	}
	csrfResp, err := http.Get(base + "api/csrf")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token, Header string }
	if err := json.NewDecoder(csrfResp.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	csrfResp.Body.Close()
	req, _ := http.NewRequest("POST", base+"api/members", strings.NewReader(`{"name":"gamma"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(tok.Header, tok.Token)
	add, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, add); add.StatusCode != http.StatusCreated && add.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/members: %s %s", add.Status, body)
	}
	code, out, errOut := r.run("book", "pull", url)
	if code != 0 || !strings.Contains(out, `name = "gamma"`) {
		t.Fatalf("gamma not in the etcd book: %s %s", out, errOut)
	}
	if m, err = matrix(); err != nil || path(m, "gamma", "alpha") != "" || path(m, "alpha", "gamma") == "(missing)" {
		t.Errorf("after adding gamma: %+v %v", m, err)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
