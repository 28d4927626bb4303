package node

// The loop. Once the node is up, one goroutine (run, in tick.go) owns the
// node's state: the book in force, applied (what the device was told),
// entries, resolved and discovered endpoints, relay choices and paths. It
// waits for the next tick or the next event, whichever comes first, and
// handles each to the end before the next: no lock guards the state,
// because nothing else touches it.
//
// Inputs are events:
//   - reloadCheck and reloadApply (Reload): check a book and list the
//     hostnames to resolve; then, once resolved outside the loop, apply it;
//   - resolvedEvent: a DDNS worker's answer for one hostname;
//   - discoveredEvent: a registry's answer for one member;
//   - the tick (the loop's own timer): one device read feeds paths,
//     discovery, DDNS scheduling, greetings and the status snapshot;
//   - callEvent: run a function on the loop (tests, and simple requests).
//
// Adding an input: define a type with a handle method that reads and
// changes the node's state (it runs on the loop), and send it with post
// (fire and forget, for workers) or wait with do. handle must not block on
// the network (lookups run in workers that post their results back), and
// must not call post or do itself: the loop would wait for itself.
//
// What readers see is published by the loop: the status snapshot (snap)
// after every tick and every applied change, and the view (book, stack)
// after every applied book. The transaction that brings the device from
// applied to the wanted configuration is computed by a pure function,
// diffPeers (apply.go).

import (
	"net/netip"
)

// event is one input of the loop. handle runs on the loop goroutine.
type event interface {
	handle(n *Node)
}

// post hands ev to the loop. It reports false, dropping ev, when the loop
// has ended.
func (n *Node) post(ev event) bool {
	select {
	case n.events <- ev:
		return true
	case <-n.loopDone:
		return false
	}
}

// callEvent runs f on the loop and then closes done.
type callEvent struct {
	f    func()
	done chan struct{}
}

func (e callEvent) handle(*Node) {
	defer close(e.done)
	e.f()
}

// do runs f on the loop and waits until it has run. It reports false when
// the loop has ended (the node closed or never came up) and f did not run.
func (n *Node) do(f func()) bool {
	done := make(chan struct{})
	if !n.post(callEvent{f: f, done: done}) {
		return false
	}
	<-done // the loop runs an event as soon as it takes it
	return true
}

// resolvedEvent is a DDNS worker's answer for one due hostname.
type resolvedEvent struct {
	lookup dueLookup
	ap     netip.AddrPort
	err    error
}

func (e resolvedEvent) handle(n *Node) { n.applyResolved(e.lookup, e.ap, e.err) }

// discoveredEvent is a registry's answer for one member.
type discoveredEvent struct {
	job  discoverJob
	ap   netip.AddrPort
	lan  []netip.AddrPort // LAN candidates on this node's networks
	from string
}

func (e discoveredEvent) handle(n *Node) { n.applyDiscovered(e.job, e.ap, e.lan, e.from) }
