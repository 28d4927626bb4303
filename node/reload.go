package node

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/wgmesh/wgmesh/internal/procs"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Reload applies a new, already validated peer book to the running node as
// a difference: new members are added, departed ones removed, changed ones
// updated in place; unchanged members keep their sessions. A book that
// cannot be applied live is refused with an error and the running book
// stays in force.
//
// The node's loop checks the book and applies it; new endpoint hostnames
// are resolved in between, outside the loop, so the loop's ticks go on
// while a slow resolver answers, and Status, Book and Dial never wait for
// a reload. Concurrent reloads apply one after another.
func (n *Node) Reload(ctx context.Context, book *peerbook.Book) error {
	if book == nil {
		return fmt.Errorf("node: reload: nil book")
	}
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	if _, _, err := n.running(); err != nil {
		return fmt.Errorf("node: reload: %w", err)
	}

	var jobs []resolveJob
	var err error
	if !n.do(func() {
		if err = n.checkReloadLocked(book); err == nil {
			jobs = n.hostnamesToResolve(book)
		}
	}) {
		return fmt.Errorf("node: reload: %w", net.ErrClosed)
	}
	if err != nil {
		return err
	}

	// Close ends the lookups: their answers could no longer be applied.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(n.upCtx, cancel)()
	looked := n.resolveAll(ctx, jobs)

	// Status answers from the snapshot until the book is applied: a
	// fresh device read would wait for the transaction, and at 10,000
	// members it competes with the apply for the CPU. A process running
	// on one P while idle (internal/procs) gets all of them for the apply
	// at once, so that a status asked meanwhile need not share its P.
	procs.Boost(applyBoost)
	n.bookWrite.Lock()
	ran := n.do(func() { err = n.reloadLocked(book, looked) })
	n.bookWrite.Unlock()
	if !ran {
		return fmt.Errorf("node: reload: %w", net.ErrClosed)
	}
	return err
}

// reloadLocked applies book with the lookups made for it. No other
// reload ran since its check (reloadMu): the book and entries that the
// lookups were listed from are still the ones in force. Runs on the loop.
func (n *Node) reloadLocked(book *peerbook.Book, looked []resolveResult) error {
	// Whatever part of the book was applied, Status shows it from now on.
	defer n.publishStatusLocked(nil)
	if err := n.checkReloadLocked(book); err != nil {
		return err
	}
	newSelf, _ := book.PeerByKey(n.self)
	oldBook := n.book
	oldSelf, _ := oldBook.PeerByKey(n.self)
	if n.cfg.ListenPort == 0 {
		if port := book.ListenPortOf(newSelf); port != n.listenPort {
			var w uapiWriter
			w.listenPort(port)
			if err := n.dev.IpcSet(w.String()); err != nil {
				return fmt.Errorf("node: reload refused: cannot listen on UDP port %d: %v", port, err)
			}
			n.log.Info("listen port changed", "from", n.listenPort, "to", port)
			n.listenPort = port
		}
	}
	if err := n.apply(book, looked); err != nil {
		return err
	}
	if err := n.applyRulesLocked(oldBook, book); err != nil {
		return err
	}
	if n.relay != nil {
		n.relay.setMembers(relayPrefixes(book, n.self))
	}
	if n.stack != nil {
		if err := n.routeFlows(book, newSelf); err != nil {
			return err
		}
	}
	if n.host != nil {
		if err := n.host.SetRoutes(otherSubnets(book, n.self)); err != nil {
			return fmt.Errorf("node: reload: routes: %w", locateRouteConflict(book, n.self, err))
		}
		if !slices.Equal(oldSelf.Subnets, newSelf.Subnets) {
			if err := n.host.SetSubnets(newSelf.Subnets); err != nil {
				return fmt.Errorf("node: reload: forwarding to this member's subnets: %w", err)
			}
		}
		// An exit member that loses exit = true stops forwarding (fail
		// closed on its side too); one that gains it starts.
		if oldSelf.Exit != newSelf.Exit || (newSelf.Exit && !slices.Equal(exitNetworks(oldBook), exitNetworks(book))) {
			if err := n.host.SetExit(newSelf.Exit, exitNetworks(book)); err != nil {
				return fmt.Errorf("node: reload: exit member (exit = true, line %d): %w", newSelf.Line, err)
			}
		}
	}
	return nil
}

// checkReloadLocked refuses a book that the running node cannot apply:
// the node is not up, or the book changes what needs a restart. Runs on
// the loop.
func (n *Node) checkReloadLocked(book *peerbook.Book) error {
	if n.closed.Load() {
		return fmt.Errorf("node: reload: %w", net.ErrClosed)
	}
	if n.dev == nil {
		return fmt.Errorf("node: reload: %w", ErrNotUp)
	}
	newSelf, ok := book.PeerByKey(n.self)
	if !ok {
		return fmt.Errorf("node: reload refused: this node's public key %s is not in the new book %s; the running book stays in force", n.self, book.Source)
	}
	oldSelf, _ := n.book.PeerByKey(n.self)
	if !slices.Equal(oldSelf.Addresses, newSelf.Addresses) {
		return fmt.Errorf("node: reload refused: this node's addresses changed (%v -> %v), which needs a restart; the running book stays in force", oldSelf.Addresses, newSelf.Addresses)
	}
	if book.Mesh.MTU != n.book.Mesh.MTU {
		return fmt.Errorf("node: reload refused: mesh.mtu changed (%d -> %d), which needs a restart; the running book stays in force", n.book.Mesh.MTU, book.Mesh.MTU)
	}
	if n.stack != nil && len(newSelf.Subnets) > 0 && !n.routesAtStart {
		return fmt.Errorf("node: reload refused: this member now routes subnets (%v), which in netstack mode needs a restart; the running book stays in force", newSelf.Subnets)
	}
	if n.stack != nil && newSelf.Exit && !n.routesAtStart {
		return fmt.Errorf("node: reload refused: this member is now an exit member (exit = true, line %d), which in netstack mode needs a restart; the running book stays in force", newSelf.Line)
	}
	if newSelf.Relay != oldSelf.Relay {
		return fmt.Errorf("node: reload refused: this member's relay setting changed, which needs a restart; the running book stays in force")
	}
	return nil
}
