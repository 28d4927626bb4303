package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/config"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// invite and join over etcd: the invitation file holds a token, not a
// key; the member is added when it joins, with a key made on the new
// machine, in the transaction that consumes the invitation (see
// etcdbook.PutInvite).

func inviteEtcdFlags() []cli.Flag {
	return append(etcdFlags(), &cli.BoolFlag{Name: "allow-http", Usage: "for an etcd:// book: allow plain http to an etcd that is not on loopback"})
}

func (e *env) inviteEtcd(c *cli.Context, url string, m peerbook.Member, ttl time.Duration, out string) error {
	if c.IsSet("sign-key") || c.IsSet("trusted-signers") || c.IsSet("book-url") {
		return usagef("invite over an etcd:// book: --sign-key, --trusted-signers and --book-url do not apply (the member follows the book in etcd, and joining cannot sign)")
	}
	s, err := openEtcd(url, etcdOptions(c))
	if err != nil {
		return err
	}
	defer s.Close()
	token, err := etcdbook.NewInviteToken()
	if err != nil {
		return err
	}
	expires := time.Now().Add(ttl).UTC().Truncate(time.Second)
	inv := invitation{Format: invitationFormat, Name: m.Name, Expires: expires, BookURL: s.Target().String(), Token: token}
	body, err := toml.Marshal(inv)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("# wgmesh invitation for member %q, expires %s, single use.\n"+
		"# It holds a SECRET token that adds a member to the mesh: give it to that\n"+
		"# machine only, over a channel you trust: wgmesh join --out DIR FILE\n",
		m.Name, expires.Format(time.RFC3339))
	if err := fileutil.WriteFileExclusive(out, append([]byte(head), body...), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	if err := s.PutInvite(ctx, token, m, ttl); err != nil {
		os.Remove(out)
		return bookedit.Refused(url, err)
	}
	_, err = fmt.Fprintf(e.stdout, "%s: invitation for %s, single use, expires %s; the member is added when it joins: on the new machine run: wgmesh join --out DIR %s\n",
		out, m.Name, expires.Format(time.RFC3339), filepath.Base(out))
	return err
}

func (e *env) joinEtcd(c *cli.Context, src string, inv invitation, dir string) error {
	if !etcdbook.IsURL(inv.BookURL) {
		return fmt.Errorf("%s: an invitation with a token needs an etcd:// book_url", src)
	}
	o := etcdOptions(c)
	for _, p := range []*string{&o.CAFile, &o.CertFile, &o.KeyFile, &o.AuthFile} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, "node.key")
	configPath := filepath.Join(dir, "wgmesh.toml")
	for _, f := range []string{keyPath, configPath} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists; this machine has joined already, or choose another --out", f)
		}
	}
	s, err := openEtcd(inv.BookURL, o)
	if err != nil {
		return err
	}
	defer s.Close()
	key, err := peerbook.GeneratePrivateKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The key first: the book never names a member whose key is lost.
	if err := peerbook.WriteKeyFile(keyPath, key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	book, self, err := s.UseInvite(ctx, inv.Token, key.Public())
	if err != nil {
		os.Remove(keyPath)
		if errors.Is(err, etcdbook.ErrInviteGone) {
			return fmt.Errorf("%s: %w; ask for a new one (wgmesh invite --name %s %s)", src, err, inv.Name, inv.BookURL)
		}
		return fmt.Errorf("%s: joining %s: %w", src, inv.BookURL, err)
	}
	conf := &config.File{Book: inv.BookURL, Key: keyPath, EtcdCA: o.CAFile, EtcdCert: o.CertFile, EtcdKey: o.KeyFile, EtcdAuthFile: o.AuthFile}
	if o.AllowHTTP {
		t := true
		conf.AllowHTTP = &t
	}
	cmd := []string{"wgmesh", "up", "--book", inv.BookURL, "--key", keyPath}
	for _, f := range []struct{ flag, v string }{{"--etcd-ca", o.CAFile}, {"--etcd-cert", o.CertFile}, {"--etcd-key", o.KeyFile}, {"--etcd-auth-file", o.AuthFile}} {
		if f.v != "" {
			cmd = append(cmd, f.flag, f.v)
		}
	}
	if o.AllowHTTP {
		cmd = append(cmd, "--allow-http")
	}
	if err := config.Write(configPath, conf); err != nil {
		// The member is in the book with a key that is on disk: say so
		// rather than undo.
		return fmt.Errorf("joined as %s, but writing %s failed: %w; start with: %s", self.Name, configPath, err, strings.Join(cmd, " "))
	}
	for i := range cmd {
		cmd[i] = shellQuote(cmd[i])
	}
	fmt.Fprintf(e.stdout, "joined as %s: %s (book serial %d, %d members)\n", self.Name, joinAddrs(self.Addresses), book.Serial, len(book.Peers))
	fmt.Fprintf(e.stdout, "wrote %s, %s\n", keyPath, configPath)
	if src != "-" {
		fmt.Fprintf(e.stdout, "the invitation %s is used up; delete it\n", src)
	}
	fmt.Fprintf(e.stdout, "start the node with:\n  wgmesh up --config %s\nwhich is the same as:\n  %s\n", shellQuote(configPath), strings.Join(cmd, " "))
	return nil
}
