package node

import (
	"errors"
	"fmt"

	"github.com/wgmesh/wgmesh/hostnet"
	"github.com/wgmesh/wgmesh/peerbook"
)

// locateRouteConflict prefixes a route conflict with the book entry that
// asks for the route, FILE:LINE like the book's own refusals, so the user
// knows which member's subnet to fix. Other errors pass unchanged.
func locateRouteConflict(book *peerbook.Book, self peerbook.Key, err error) error {
	var rc *hostnet.RouteConflictError
	if !errors.As(err, &rc) {
		return err
	}
	for i := range book.Peers {
		p := &book.Peers[i]
		if p.PublicKey == self {
			continue
		}
		for _, s := range p.Subnets {
			if s == rc.Prefix {
				return fmt.Errorf("%s:%d: peer %q: subnet %s: %w", book.Source, p.Line, p.Name, s, err)
			}
		}
	}
	return err
}
