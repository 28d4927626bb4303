// Package etcdbook keeps a wgmesh peer book in etcd, one small record per
// part, so that one membership change is one small transaction, and reads
// it back as an ordinary, validated peerbook.Book.
//
// # Layout
//
// Under the key prefix "/PREFIX/" of a book address
// etcd://HOST:PORT[,HOST:PORT...]/PREFIX:
//
//	head             "wgmesh-etcd-book 1", the serial and the SHA-256 of the records
//	head.sig         SSH signature of head (signed books only)
//	mesh             the [mesh] table, as peerbook.Marshal writes it
//	members/NAME     one [[peer]] table per member, NAME in lower case
//	rules            the [[rule]] tables (absent when the book has none)
//	invites/ID       pending invitations, each under a lease (its expiry)
//	endpoints/NAME   observed endpoints, each under its publisher's lease
//
// The records (mesh, members/*, rules) are TOML fragments; the book is
// their concatenation in key order behind "format" and "serial", checked
// by peerbook.Parse like a file, with every problem named by its record's
// key and line. Every change writes the records it changes and a new head
// in one transaction that compares the old head's revision, so concurrent
// changes never lose one another. head's digest covers every record: a
// record changed without a new head (by hand, or a write cut short) makes
// the book refused until the head matches again, and with signatures the
// one signed head vouches for every record.
package etcdbook

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Scheme is the URL scheme of a book in etcd.
const Scheme = "etcd://"

// IsURL reports whether s names a book in etcd.
func IsURL(s string) bool {
	return len(s) >= len(Scheme) && strings.EqualFold(s[:len(Scheme)], Scheme)
}

// Target is a parsed book address.
type Target struct {
	// Endpoints are the etcd members, host:port each.
	Endpoints []string
	// Prefix is the book's key prefix, "/PREFIX/".
	Prefix string
}

// String is the book's address as etcd://HOST:PORT,.../PREFIX.
func (t Target) String() string {
	return Scheme + strings.Join(t.Endpoints, ",") + strings.TrimSuffix(t.Prefix, "/")
}

// ParseURL parses etcd://HOST:PORT[,HOST:PORT...]/PREFIX. PREFIX is one or
// more path segments of letters, digits, '.', '_' and '-'.
func ParseURL(s string) (Target, error) {
	const want = "want etcd://HOST:PORT[,HOST:PORT...]/PREFIX"
	if !IsURL(s) {
		return Target{}, fmt.Errorf("%q is not an etcd:// address; %s", s, want)
	}
	rest := s[len(Scheme):]
	hosts, prefix, ok := strings.Cut(rest, "/")
	if !ok || prefix == "" {
		return Target{}, fmt.Errorf("%s: no key prefix; %s, e.g. etcd://127.0.0.1:2379/wgmesh/prod", s, want)
	}
	if strings.Contains(hosts, "@") {
		return Target{}, fmt.Errorf("etcd address: credentials do not belong in the address (it is shown in logs); use an auth file")
	}
	var t Target
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return Target{}, fmt.Errorf("%s: endpoint %q is not HOST:PORT; %s", s, h, want)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Target{}, fmt.Errorf("%s: endpoint %q: port must be 1-65535", s, h)
		}
		t.Endpoints = append(t.Endpoints, h)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	for _, seg := range strings.Split(prefix, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.TrimFunc(seg, prefixRune) != "" {
			return Target{}, fmt.Errorf("%s: key prefix %q: segments are letters, digits, '.', '_' and '-', none empty, '.' or '..'", s, prefix)
		}
	}
	t.Prefix = "/" + prefix + "/"
	return t, nil
}

func prefixRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// isLoopback reports whether host:port names a loopback address
// ("localhost" included).
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
