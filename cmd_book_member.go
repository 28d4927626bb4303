package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Membership commands: book add, book remove, book set. Each reads the book
// under a lock, applies one pure operation of peerbook, checks the result
// with the validator of `book check`, and writes it atomically (then its
// signature), so that a refused change leaves the file byte for byte as it
// was and concurrent changes never lose one another.

// lockWait bounds how long a change waits for another one on the same book.
const lockWait = 30 * time.Second

// memberFlags are the settings of a member shared by add and invite.
func memberFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "name", Usage: "member `NAME`, a DNS label (required)"},
		&cli.StringFlag{Name: "endpoint", Usage: "`HOST:PORT` where other members reach it (omit behind NAT)"},
		&cli.StringSliceFlag{Name: "address", Usage: "mesh `IP` to use instead of the next free one of its network. Repeatable"},
		&cli.StringSliceFlag{Name: "subnet", Usage: "a LAN `CIDR` the member routes for the mesh. Repeatable"},
		&cli.StringSliceFlag{Name: "group", Usage: "a `GROUP` the member belongs to (for access rules). Repeatable"},
		&cli.BoolFlag{Name: "registry", Usage: "the member publishes observed endpoints for members behind NAT"},
		&cli.BoolFlag{Name: "relay", Usage: "the member forwards between members that cannot meet directly"},
		signKeyFlag(),
	}
}

func signKeyFlag() cli.Flag {
	return &cli.StringFlag{Name: "sign-key", Usage: "sign the changed book with this SSH private key `FILE` (writes BOOK.sig, as book sign does); needed when BOOK.sig exists"}
}

func (e *env) bookMemberCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "add",
			Usage:     "add a member with the next free address in every mesh network; raises serial",
			ArgsUsage: "BOOK",
			Flags: append(memberFlags(),
				&cli.StringFlag{Name: "public-key", Usage: "the member's public `KEY` (wgmesh key generate on the member prints it)"},
				&cli.StringFlag{Name: "new-key", Usage: "generate the member's private key into `FILE` (mode 0600, never overwriting)"},
				&cli.StringSliceFlag{Name: "network", Usage: "mesh network `CIDR` of a new book: only when BOOK does not exist yet. Repeatable"},
			),
			Action: e.bookAdd,
		},
		{
			Name:      "remove",
			Usage:     "remove a member; raises serial",
			ArgsUsage: "BOOK",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "name", Usage: "member `NAME` (required)"},
				signKeyFlag(),
			},
			Action: e.bookRemove,
		},
		{
			Name:      "set",
			Usage:     "change settings of a member, only those given; raises serial",
			ArgsUsage: "BOOK",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "name", Usage: "member `NAME` (required)"},
				&cli.StringFlag{Name: "public-key", Usage: "new public `KEY` (a new key pair on the member)"},
				&cli.StringFlag{Name: "endpoint", Usage: "new `HOST:PORT`"},
				&cli.BoolFlag{Name: "no-endpoint", Usage: "remove the endpoint (the member is behind NAT)"},
				&cli.UintFlag{Name: "listen-port", Usage: "`PORT` the member binds (0 removes the setting)"},
				&cli.StringSliceFlag{Name: "address", Usage: "the member's mesh `IP`s, replacing the list. Repeatable"},
				&cli.StringSliceFlag{Name: "subnet", Usage: "routed LAN `CIDR`s, replacing the list. Repeatable"},
				&cli.BoolFlag{Name: "no-subnets", Usage: "remove every subnet"},
				&cli.StringSliceFlag{Name: "group", Usage: "`GROUP`s, replacing the list. Repeatable"},
				&cli.BoolFlag{Name: "no-groups", Usage: "remove every group"},
				&cli.BoolFlag{Name: "registry", Usage: "make the member a registry"},
				&cli.BoolFlag{Name: "no-registry", Usage: "make the member no registry"},
				&cli.BoolFlag{Name: "relay", Usage: "make the member a relay"},
				&cli.BoolFlag{Name: "no-relay", Usage: "make the member no relay"},
				signKeyFlag(),
			},
			Action: e.bookSet,
		},
	}
}

// parseMember reads the member flags shared by add and invite.
func parseMember(c *cli.Context) (peerbook.Member, error) {
	m := peerbook.Member{Registry: c.Bool("registry"), Relay: c.Bool("relay")}
	var err error
	if m.Name, err = requiredFlag(c, "name", "NAME"); err != nil {
		return m, err
	}
	if s := c.String("endpoint"); s != "" {
		if m.Endpoint, err = peerbook.ParseEndpoint(s); err != nil {
			return m, fmt.Errorf("--endpoint: %w", err)
		}
	}
	if m.Addresses, err = parseAddrs(c.StringSlice("address")); err != nil {
		return m, err
	}
	if m.Subnets, err = parsePrefixes("--subnet", c.StringSlice("subnet")); err != nil {
		return m, err
	}
	m.Groups = c.StringSlice("group")
	return m, nil
}

func parseAddrs(ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--address %q is not an IP address", s)
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePrefixes(flag string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q is not a network like 192.168.1.0/24", flag, s)
		}
		out = append(out, p)
	}
	return out, nil
}

func (e *env) bookAdd(c *cli.Context) error {
	a, err := args(c, "BOOK")
	if err != nil {
		return err
	}
	m, err := parseMember(c)
	if err != nil {
		return err
	}
	pubFlag, keyFile := c.String("public-key"), c.String("new-key")
	if (pubFlag == "") == (keyFile == "") {
		return usagef("book add needs either --public-key KEY or --new-key FILE")
	}
	var priv peerbook.PrivateKey
	var hook editHook
	if pubFlag != "" {
		if m.PublicKey, err = peerbook.ParseKey(pubFlag); err != nil {
			return fmt.Errorf("--public-key %q: %w", pubFlag, err)
		}
	} else {
		if _, err := os.Lstat(keyFile); err == nil {
			return fmt.Errorf("key file %s already exists; refusing to overwrite it (remove it first or choose another --new-key)", keyFile)
		}
		if priv, err = peerbook.GeneratePrivateKey(); err != nil {
			return err
		}
		m.PublicKey = priv.Public()
		hook = func(*peerbook.Book, []byte, []byte) (func(), error) {
			if err := peerbook.WriteKeyFile(keyFile, priv); err != nil {
				return nil, err
			}
			return func() { os.Remove(keyFile) }, nil
		}
	}
	change := func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.AddMember(b, m) }
	ed := &bookEdit{path: a[0], signKey: c.String("sign-key"), change: change, hook: hook, canCreate: true, etcd: etcdOptions(c)}
	if nets := c.StringSlice("network"); len(nets) > 0 {
		if ed.networks, err = parsePrefixes("--network", nets); err != nil {
			return err
		}
	}
	nb, err := e.runEdit(ed)
	if err != nil {
		return err
	}
	p, _ := nb.PeerByName(m.Name)
	fmt.Fprintf(e.stdout, "%s: added %s: %s\n", a[0], p.Name, joinAddrs(p.Addresses))
	if keyFile != "" {
		fmt.Fprintf(e.stdout, "%s: private key of %s (public %s)\n", keyFile, p.Name, p.PublicKey)
	}
	return e.printEdited(ed, nb)
}

func (e *env) bookRemove(c *cli.Context) error {
	a, err := args(c, "BOOK")
	if err != nil {
		return err
	}
	name, err := requiredFlag(c, "name", "NAME")
	if err != nil {
		return err
	}
	ed := &bookEdit{path: a[0], signKey: c.String("sign-key"), etcd: etcdOptions(c),
		change: func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.RemoveMember(b, name) }}
	nb, err := e.runEdit(ed)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: removed %s\n", a[0], name)
	return e.printEdited(ed, nb)
}

func (e *env) bookSet(c *cli.Context) error {
	a, err := args(c, "BOOK")
	if err != nil {
		return err
	}
	name, err := requiredFlag(c, "name", "NAME")
	if err != nil {
		return err
	}
	var ch peerbook.Change
	changed := false
	conflict := func(x, y string) error {
		return usagef("book set: --%s and --%s contradict each other", x, y)
	}
	if c.IsSet("public-key") {
		k, err := peerbook.ParseKey(c.String("public-key"))
		if err != nil {
			return fmt.Errorf("--public-key %q: %w", c.String("public-key"), err)
		}
		ch.PublicKey, changed = &k, true
	}
	switch {
	case c.IsSet("endpoint") && c.Bool("no-endpoint"):
		return conflict("endpoint", "no-endpoint")
	case c.IsSet("endpoint"):
		ep, err := peerbook.ParseEndpoint(c.String("endpoint"))
		if err != nil {
			return fmt.Errorf("--endpoint: %w", err)
		}
		ch.Endpoint, changed = &ep, true
	case c.Bool("no-endpoint"):
		ch.Endpoint, changed = &peerbook.Endpoint{}, true
	}
	if c.IsSet("listen-port") {
		n := c.Uint("listen-port")
		if n > 65535 {
			return fmt.Errorf("--listen-port %d: a port is at most 65535", n)
		}
		port := uint16(n)
		ch.ListenPort, changed = &port, true
	}
	if c.IsSet("address") {
		as, err := parseAddrs(c.StringSlice("address"))
		if err != nil {
			return err
		}
		ch.Addresses, changed = &as, true
	}
	switch {
	case c.IsSet("subnet") && c.Bool("no-subnets"):
		return conflict("subnet", "no-subnets")
	case c.IsSet("subnet"):
		ps, err := parsePrefixes("--subnet", c.StringSlice("subnet"))
		if err != nil {
			return err
		}
		ch.Subnets, changed = &ps, true
	case c.Bool("no-subnets"):
		ch.Subnets, changed = &[]netip.Prefix{}, true
	}
	switch {
	case c.IsSet("group") && c.Bool("no-groups"):
		return conflict("group", "no-groups")
	case c.IsSet("group"):
		gs := c.StringSlice("group")
		ch.Groups, changed = &gs, true
	case c.Bool("no-groups"):
		ch.Groups, changed = &[]string{}, true
	}
	for _, f := range []struct {
		name string
		dst  **bool
	}{{"registry", &ch.Registry}, {"relay", &ch.Relay}} {
		on, off := c.Bool(f.name), c.Bool("no-"+f.name)
		switch {
		case on && off:
			return conflict(f.name, "no-"+f.name)
		case on || off:
			v := on
			*f.dst, changed = &v, true
		}
	}
	if !changed {
		return usagef("book set: nothing to change; give at least one setting (see: %s --help)", c.Command.HelpName)
	}
	ed := &bookEdit{path: a[0], signKey: c.String("sign-key"), etcd: etcdOptions(c),
		change: func(b *peerbook.Book) (*peerbook.Book, error) { return peerbook.SetMember(b, name, ch) }}
	nb, err := e.runEdit(ed)
	if err != nil {
		return err
	}
	p, _ := nb.PeerByName(name)
	fmt.Fprintf(e.stdout, "%s: changed %s\n", a[0], p.Name)
	return e.printEdited(ed, nb)
}

// editHook is bookedit.Hook: it runs once the new book is known and valid,
// before it is written.
type editHook = bookedit.Hook

// bookEdit is one change of a book file.
type bookEdit struct {
	path    string
	signKey string
	change  func(*peerbook.Book) (*peerbook.Book, error)
	hook    editHook
	// canCreate marks a change that may start a new book: with networks, a
	// book that does not exist is created.
	canCreate bool
	networks  []netip.Prefix

	signer ssh.Signer // loaded from signKey
	signed bool       // BOOK.sig written

	etcd etcdbook.Options // for a book in etcd
}

// runEdit applies ed with bookedit, the code the web page shares, and
// returns the new book.
func (e *env) runEdit(ed *bookEdit) (*peerbook.Book, error) {
	if etcdbook.IsURL(ed.path) {
		return e.runEtcdEdit(ed)
	}
	if ed.etcd != (etcdbook.Options{}) {
		return nil, usagef("the --etcd-* options and --allow-http apply to an etcd:// book, not to %s", ed.path)
	}
	if ed.signKey != "" {
		s, err := booksign.LoadSigner(ed.signKey)
		if err != nil {
			return nil, err
		}
		ed.signer = s
	}
	be := bookedit.Edit{
		Path:     ed.path,
		Signer:   ed.signer,
		Change:   ed.change,
		Hook:     ed.hook,
		LockWait: lockWait,
		Note:     func(s string) { fmt.Fprintf(e.stderr, "note: %s\n", s) },
	}
	if _, err := os.Stat(ed.path); errors.Is(err, fs.ErrNotExist) {
		if !ed.canCreate {
			return nil, fmt.Errorf("peer book %s does not exist", ed.path)
		}
		if len(ed.networks) == 0 {
			return nil, fmt.Errorf("%s does not exist; to start a new book, give its mesh networks, e.g. --network 10.42.0.0/16 --network fd42:42::/64", ed.path)
		}
		be.New = &peerbook.Book{
			Format: peerbook.CurrentFormat,
			Mesh: peerbook.Mesh{
				Domain:              peerbook.DefaultDomain,
				Networks:            ed.networks,
				ListenPort:          peerbook.DefaultListenPort,
				MTU:                 peerbook.DefaultMTU,
				PersistentKeepalive: peerbook.DefaultKeepalive,
			},
		}
	} else if len(ed.networks) > 0 {
		return nil, fmt.Errorf("%s exists already: --network only starts a new book (the mesh networks of a book are not a membership change)", ed.path)
	}
	res, err := bookedit.Apply(be)
	if errors.Is(err, bookedit.ErrNeedsSigner) {
		return nil, fmt.Errorf("%s is signed (%s.sig exists): an unsigned change would be refused by every node with --trusted-signers; give --sign-key SSH_PRIVATE_KEY to sign it", ed.path, ed.path)
	}
	if err != nil {
		return nil, err
	}
	ed.signed = res.Signed
	return res.Book, nil
}

func (e *env) printEdited(ed *bookEdit, nb *peerbook.Book) error {
	if ed.signed {
		fmt.Fprintf(e.stdout, "%s.sig: signed serial %d with %s %s\n", ed.path, nb.Serial,
			ed.signer.PublicKey().Type(), ssh.FingerprintSHA256(ed.signer.PublicKey()))
	}
	_, err := fmt.Fprintf(e.stdout, "%s: ok, %d members, serial %d\n", ed.path, len(nb.Peers), nb.Serial)
	return err
}

// readBookFile reads a book file of at most peerbook.MaxSize bytes; a
// FIFO or device is refused rather than read.
func readBookFile(path string) ([]byte, error) {
	return fileutil.ReadFileLimit(path, peerbook.MaxSize)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
