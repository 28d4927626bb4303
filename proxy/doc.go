// Package proxy lets programs on the host reach the mesh by member name:
// a SOCKS5 server ([SOCKS5], RFC 1928 with RFC 1929 username/password
// authentication, CONNECT and UDP ASSOCIATE) and an HTTP proxy ([HTTP],
// CONNECT tunnels and absolute-form requests).
//
// In netstack mode the mesh exists only inside the wgmesh process, so
// curl, ssh, psql or a browser cannot open a socket into it by themselves;
// pointed at one of these proxies they can:
//
//	curl --socks5-hostname 127.0.0.1:1080 http://beta/
//	curl -x http://127.0.0.1:8080 http://beta.mesh/
//
// # Destinations
//
// Host names are resolved against the peer book only, never against the
// host's DNS: "beta" and "beta.mesh" (case-insensitive) name a member and
// stand for its first IPv4 address, else its first address. The proxies
// reach members' addresses and the subnets members route; anything else is
// refused (SOCKS5 reply 0x02, HTTP 403) unless an Allow prefix covers it.
// The check happens before any dial. A name that could be a member but is
// not in the book ("delta", "delta.mesh") gets SOCKS5 reply 0x04 (host
// unreachable) or HTTP 502; other names ("example.com") are not resolved
// at all and are refused like any non-mesh destination. Names are looked
// up in the book the
// [Book] func returns at the time of each request, so a reload takes effect
// for new connections at once.
//
// With an exit member (the Exit field, node.Node.ExitActive) addresses
// outside the mesh are allowed too while it is one, and names outside the
// mesh's namespace are resolved with the Resolver field (this host's
// resolver by default); member names and names under the mesh domain
// still never leave the book.
//
// # Usage
//
// Check the listen address before binding, so an open proxy is refused at
// start-up rather than discovered later:
//
//	if err := proxy.CheckListen(addr, creds != nil); err != nil {
//		return err
//	}
//	ln, err := net.Listen("tcp", addr)
//	...
//	s := &proxy.SOCKS5{Dialer: n, Book: n.Book, Auth: creds, Logger: log}
//	go s.Serve(ln)
//	defer s.Close()
//
// The package knows nothing about how the mesh is reached: a [Dialer] opens
// connections (a *node.Node in netstack or TUN mode satisfies it) and a
// [Book] func returns the current peer book.
package proxy
