// Package node runs one member of a wgmesh full mesh: it owns the
// wireguard-go device, finds itself in the peer book by its public key and
// configures every other member through the UAPI.
//
// # Usage
//
// A Go program joins the mesh the way the wgmesh command does:
//
//	book, err := peerbook.Load("book.toml")
//	key, err := peerbook.ReadKeyFile("alpha.key")
//	n, err := node.New(node.Config{Book: book, PrivateKey: key})
//	err = n.Up(ctx)
//	defer n.Close()
//	conn, err := n.Dial(ctx, "tcp", "beta:80")
//
// In netstack mode (the default) the mesh exists only inside the process:
// use Dial, Listen and ListenPacket to reach it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/filter"
	"github.com/wgmesh/wgmesh/hostnet"
	"github.com/wgmesh/wgmesh/internal/procs"
	"github.com/wgmesh/wgmesh/netstack"
	"github.com/wgmesh/wgmesh/peerbook"
	"github.com/wgmesh/wgmesh/registry"
)

// ErrNotUp is returned by methods that need a running node before Up has
// succeeded.
var ErrNotUp = errors.New("node: not up (call Up first)")

// Node is one member of the mesh. Create it with New, start it with Up and
// stop it with Close. Its methods are safe for concurrent use.
//
// One goroutine, the loop (loop.go), owns the node's state once it is up:
// the book in force, what the device was told (applied), resolved and
// discovered endpoints, relay choices and paths. Everything that changes
// that state reaches the loop as an event; readers (Status, Book, Dial,
// the registry's answers) read what the loop publishes through atomic
// pointers and never wait for it.
type Node struct {
	cfg  Config
	log  *slog.Logger
	self peerbook.Key

	// life makes Up and Close one after another: Close waits for an Up
	// in progress and then undoes it.
	life   sync.Mutex
	upOnce sync.Once
	upErr  error
	closed atomic.Bool

	// snap is the latest status snapshot, published by the loop after
	// every tick and every change it applies; nil while the node is not
	// up. view is what Book, Dial and InterfaceName read.
	snap atomic.Pointer[nodeSnapshot]
	view atomic.Pointer[nodeView]
	// bookWrite is held for writing by Reload while the loop applies a
	// book (wireguard-go holds its own lock for the whole transaction),
	// and for reading by a Status that reads the device afresh: Status
	// takes it only if it can without waiting (TryRLock), and else
	// answers from the snapshot.
	bookWrite sync.RWMutex

	// reloadMu makes reloads apply one after another, in call order. A
	// reload resolves endpoint names outside the loop; holding reloadMu,
	// it knows no other reload changed the book meanwhile.
	reloadMu sync.Mutex

	// events carries the loop's inputs (event); loopDone is closed once
	// the loop has ended or will never run, so that no sender waits for
	// it in vain.
	events    chan event
	loopDone  chan struct{}
	endLoop   func() // closes loopDone once
	stopLoops context.CancelFunc
	loops     sync.WaitGroup
	// upCtx ends when the node closes; a reload's lookups end with it.
	upCtx context.Context

	// Test hooks (hooks.go), set before Up and not changed after, except
	// where a test changes them on the loop (onLoop).
	hooks testHooks

	// The loop's state. Up sets it up before the loop starts, the loop
	// alone reads and changes it while it runs, and teardown after it has
	// ended. No lock guards it: functions that touch it (named ...Locked,
	// or documented "runs on the loop") run on the loop goroutine.
	book    *peerbook.Book
	applied map[peerbook.Key]*peerConfig
	entries map[peerbook.Key]*peerbook.Peer // book entries behind applied
	// severalEndpoints are the members of entries with an endpoints list,
	// in book order: the only ones rotateEndpointsLocked looks at.
	severalEndpoints []peerbook.Key
	ddns             map[peerbook.Key]*ddnsState // hostname endpoints to re-resolve
	// discovered holds endpoints learnt from registries, for members
	// with no endpoint in the book.
	discovered map[peerbook.Key]netip.AddrPort
	// relayVia maps a member reached through a relay to that relay.
	relayVia map[peerbook.Key]peerbook.Key
	paths    map[peerbook.Key]*pathState
	// cands holds the candidate of members with several endpoints.
	cands map[peerbook.Key]*candidateState
	// discoverNext schedules the next registry lookup per member.
	discoverNext map[peerbook.Key]time.Time
	// lan is the LAN candidate state (lan.go).
	lan        lanState
	registry   *registry.Server
	dnsServers []*dns.Server
	// relay wraps the device when this member is a relay.
	relay *relayDevice
	// filter enforces the book's access rules (filterdev.go).
	filter *filterDevice
	// endpointChanges counts endpoint changes per member (DNS, book).
	endpointChanges map[peerbook.Key]uint64
	// staleAfter, relayAfter and discoverReachable override
	// staleHandshake and the package's relayAfter and discoverReachable in
	// tests.
	staleAfter        time.Duration
	relayAfter        time.Duration
	discoverReachable time.Duration
	// probeEvery overrides directProbeEvery in tests.
	probeEvery time.Duration
	// deadAfter overrides relayDeadAfter, the watch's verdict, in tests.
	deadAfter time.Duration
	// routesAtStart: the netstack was created for subnet routing.
	routesAtStart bool
	// exitForwarding: the netstack router forwards outside the mesh.
	exitForwarding bool
	dev            *device.Device
	stack          *netstack.Stack        // netstack mode only
	subnets        *netstack.SubnetRouter // netstack mode with subnets only
	ifname         string                 // TUN mode only: the interface's name
	host           *hostnet.Applied       // TUN mode only: addresses, routes, rules
	uapi           net.Listener           // TUN mode only: the wg(8) UAPI socket
	listenPort     uint16

	// lazy keeps idle members out of the device (lazy.go, lazynode.go);
	// lazyQuietAfter and lazyUnansweredAfter override its windows in tests.
	lazy                                *lazyPeers
	lazyBind                            *lazyBind
	lazyQuietAfter, lazyUnansweredAfter time.Duration
	releasing                           atomic.Bool // releaseMemory runs
}

// nodeView is what readers that need no device facts get without waiting:
// the book in force and how to reach the mesh. The loop replaces it after
// every applied book; nothing in it changes once published.
type nodeView struct {
	book       *peerbook.Book
	stack      *netstack.Stack
	ifname     string
	listenPort uint16
	// up: Up has succeeded and Close has not run.
	up bool
}

// New checks cfg and returns a Node that is not yet running. It fails when
// the private key's public key is not in the book, naming the key to add.
func New(cfg Config) (*Node, error) {
	if cfg.Book == nil {
		return nil, errors.New("node: Config.Book is required")
	}
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("node: Config.PrivateKey is required")
	}
	if cfg.ListenPort < EphemeralPort || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("node: Config.ListenPort %d out of range", cfg.ListenPort)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, self: cfg.PrivateKey.Public(),
		events: make(chan event), loopDone: make(chan struct{})}
	n.endLoop = sync.OnceFunc(func() { close(n.loopDone) })
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if _, ok := cfg.Book.PeerByKey(n.self); !ok {
		return nil, fmt.Errorf("node: this node's public key %s is not in the peer book %s; add a [[peer]] with public_key = %q", n.self, cfg.Book.Source, n.self.String())
	}
	if n.cfg.Resolver == nil {
		n.cfg.Resolver = net.DefaultResolver
	}
	switch n.cfg.Mode {
	case "":
		n.cfg.Mode = ModeNetstack
	case ModeNetstack, ModeTUN:
	default:
		return nil, fmt.Errorf("node: unknown mode %q (want %q or %q)", cfg.Mode, ModeNetstack, ModeTUN)
	}
	if n.cfg.InterfaceName == "" {
		n.cfg.InterfaceName = defaultInterfaceName()
	}
	return n, nil
}

// Up creates the device and applies the book. It runs once; later calls
// return the first call's result. On failure everything it set up is undone.
func (n *Node) Up(ctx context.Context) error {
	n.upOnce.Do(func() { n.upErr = n.up(ctx) })
	return n.upErr
}

// applyBoost is how long a book's apply asks the process for all its Ps
// (procs.Boost): a cold apply of 10,000 members takes about a second.
const applyBoost = 2 * time.Second

func (n *Node) up(ctx context.Context) error {
	procs.Boost(applyBoost)
	n.life.Lock()
	defer n.life.Unlock()
	if n.closed.Load() {
		return fmt.Errorf("node: up: %w", net.ErrClosed)
	}
	book := n.cfg.Book
	self, _ := book.PeerByKey(n.self)

	if err := n.checkExitNode(book); err != nil {
		return err
	}
	var tdev tun.Device
	switch n.cfg.Mode {
	case ModeTUN:
		d, name, err := createTUN(n.cfg.InterfaceName, book.Mesh.MTU)
		if err != nil {
			return err
		}
		tdev, n.ifname = d, name
	default:
		// An exit member forwards like a subnet router (netstack/exit.go).
		routes := len(self.Subnets) > 0 || self.Exit
		st, err := netstack.New(self.Addresses, book.Mesh.MTU, netstack.Options{SubnetRouting: routes})
		if err != nil {
			return err
		}
		tdev, n.stack = st, st
		n.routesAtStart = routes
	}
	// Below the relay, so packets relayed for others are not judged here.
	n.filter = newFilterDevice(tdev, filter.New(nil, filter.Options{}), n.log.With("part", "filter"))
	n.filter.exitNode = n.cfg.ExitNode
	tdev = n.filter
	if err := n.applyRulesLocked(nil, book); err != nil {
		tdev.Close()
		return err
	}
	if self.Relay {
		n.relay = newRelayDevice(tdev)
		n.relay.setMembers(relayPrefixes(book, n.self))
		tdev = n.relay
	}
	bind := n.hooks.bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	// Keeps wireguard-go's UDP GSO messages below the kernel's limit.
	bind = newSplitBind(bind)
	// Lets each received batch through before the next is read.
	bind = newYieldBind(bind)
	// Lazy peers: the outermost wrappers, so relayed packets wake too.
	tdev, bind = n.lazyWrap(tdev, bind)
	dev := device.NewDevice(tdev, bind, wgLogger(n.log))
	n.lazyAttach(dev)

	port := book.ListenPortOf(self)
	switch {
	case n.cfg.ListenPort == EphemeralPort:
		port = 0
	case n.cfg.ListenPort > 0:
		port = uint16(n.cfg.ListenPort)
	}
	var w uapiWriter
	w.privateKey(n.cfg.PrivateKey)
	w.listenPort(port)
	mark := n.exitMark(n.ifname)
	if mark != 0 {
		w.fwmark(mark)
	}
	w.replacePeers()
	if err := dev.IpcSet(w.String()); err != nil {
		dev.Close()
		return fmt.Errorf("node: listen on UDP port %d: %w", port, errors.Unwrap(err))
	}
	n.dev = dev
	n.applied = map[peerbook.Key]*peerConfig{}
	n.ddns = map[peerbook.Key]*ddnsState{}
	n.discovered = map[peerbook.Key]netip.AddrPort{}
	n.relayVia = map[peerbook.Key]peerbook.Key{}
	n.paths = map[peerbook.Key]*pathState{}
	n.cands = map[peerbook.Key]*candidateState{}
	n.discoverNext = map[peerbook.Key]time.Time{}
	n.endpointChanges = map[peerbook.Key]uint64{}
	// The loop does not run yet: Up owns the node's state, lookups
	// included (Reload resolves outside the loop). Close waits for Up.
	if err := n.apply(book, n.resolveAll(ctx, n.hostnamesToResolve(book))); err != nil {
		n.teardown()
		return err
	}
	if err := dev.Up(); err != nil {
		n.teardown()
		return fmt.Errorf("node: bring device up: %w", err)
	}
	bound, err := n.readListenPort()
	if err != nil {
		n.teardown()
		return err
	}
	n.listenPort = bound
	if n.cfg.Mode == ModeTUN {
		setup := n.hostSetup(n.ifname, book, self)
		setup.ExitMark, setup.Exit = mark, self.Exit
		if mark != 0 {
			setup.ExitEndpoints = n.exitEndpointsLocked()
		}
		if self.Exit {
			setup.ExitNetworks = exitNetworks(book)
		}
		host, err := hostnet.Apply(setup)
		if err != nil {
			n.teardown()
			return fmt.Errorf("node: configure interface %s: %w", n.ifname, locateRouteConflict(book, n.self, err))
		}
		n.host = host
		if err := n.serveUAPI(n.ifname); err != nil {
			n.teardown()
			return err
		}
	}
	if n.stack != nil {
		if err := n.routeFlows(book, self); err != nil {
			n.teardown()
			return err
		}
	}
	if err := n.serveMeshDNS(self); err != nil {
		n.teardown()
		return err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	n.stopLoops, n.upCtx = stop, loopCtx
	n.greetStart(loopCtx)
	n.publishStatusLocked(nil)
	n.loops.Add(1)
	start := n.now()
	go func() {
		defer n.loops.Done()
		defer n.endLoop()
		n.run(loopCtx, start)
	}()
	n.publishView(true)
	n.log.Info("mesh node up", "name", self.Name, "key", n.self.Short(), "mode", string(n.cfg.Mode), "interface", n.ifname,
		"addresses", fmt.Sprint(self.Addresses), "listen_port", bound, "members", len(book.Peers)-1)
	return nil
}

// teardown undoes what up set up, in reverse order: the loop and its
// workers first (so nothing changes the state any more), then the DNS
// servers, the UAPI socket, the subnet router, the host's configuration
// and the device. The caller holds n.life.
func (n *Node) teardown() {
	if n.stopLoops != nil {
		n.stopLoops()
		n.stopLoops = nil
	}
	n.loops.Wait()
	n.endLoop() // when the loop never started
	for _, s := range n.dnsServers {
		s.Shutdown()
	}
	n.dnsServers, n.registry = nil, nil
	if n.uapi != nil {
		n.uapi.Close() // also removes the socket file
	}
	if n.subnets != nil {
		n.subnets.Close()
		n.subnets = nil
	}
	if n.host != nil {
		if err := n.host.Undo(); err != nil {
			n.log.Error("cleaning up interface", "interface", n.ifname, "err", err)
		}
	}
	n.lazyClose() // no wake may write to the device while it closes
	n.snap.Store(nil)
	n.publishView(false)
	if n.dev != nil {
		n.dev.Close() // closes the TUN device or stack and the bind too
	}
	n.dev, n.stack, n.host, n.uapi, n.applied, n.entries, n.relay = nil, nil, nil, nil, nil, nil, nil
	n.severalEndpoints = nil
}

// publishView publishes the book in force for Book, Dial and
// InterfaceName. Runs on the loop, or in Up and teardown.
func (n *Node) publishView(up bool) {
	book := n.book
	if book == nil {
		book = n.cfg.Book
	}
	n.view.Store(&nodeView{book: book, stack: n.stack, ifname: n.ifname, listenPort: n.listenPort, up: up && n.dev != nil})
}

// Close stops the node and releases its port and goroutines. The first call
// returns nil; later calls return an error wrapping net.ErrClosed.
func (n *Node) Close() error {
	if n.closed.Swap(true) {
		return fmt.Errorf("node: close: %w", net.ErrClosed)
	}
	n.life.Lock()
	defer n.life.Unlock()
	n.teardown()
	return nil
}

// Book returns the peer book currently applied. It never waits for a
// reload: during one it returns the book before it.
func (n *Node) Book() *peerbook.Book {
	if v := n.view.Load(); v != nil {
		return v.book
	}
	return n.cfg.Book
}

// PublicKey returns this node's public key.
func (n *Node) PublicKey() peerbook.Key { return n.self }

// running returns the stack (nil in TUN mode) and book of a node that is
// up.
func (n *Node) running() (*netstack.Stack, *peerbook.Book, error) {
	if n.closed.Load() {
		return nil, nil, net.ErrClosed
	}
	v := n.view.Load()
	if v == nil || !v.up {
		return nil, nil, ErrNotUp
	}
	return v.stack, v.book, nil
}

// InterfaceName returns the TUN interface's name in TUN mode, else "".
func (n *Node) InterfaceName() string {
	if v := n.view.Load(); v != nil {
		return v.ifname
	}
	return ""
}

// wgLogger routes wireguard-go's logs to slog at debug (verbose) and error
// level. wireguard-go prints peers as shortened public keys only.
func wgLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard: " + fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			log.Error("wireguard: " + fmt.Sprintf(format, args...))
		},
	}
}

// routeFlows, in netstack mode, forwards flows from the mesh into this
// member's subnets, and as an exit member outside the mesh, through host
// sockets. Runs on the loop or in Up.
func (n *Node) routeFlows(book *peerbook.Book, self *peerbook.Peer) error {
	if n.subnets != nil {
		n.subnets.SetSubnets(self.Subnets)
		n.subnets.SetMembers(memberPrefixes(book, n.self))
		n.setExitLocked(book, self)
		return nil
	}
	if len(self.Subnets) == 0 && !self.Exit {
		return nil
	}
	if !n.routesAtStart {
		return errors.New("node: this member now routes subnets or is an exit member, which in netstack mode needs a restart; the running book stays in force")
	}
	var dial netstack.HostDialer = &net.Dialer{}
	if n.hooks.hostDial != nil {
		dial = n.hooks.hostDial
	}
	r, err := n.stack.RouteSubnets(self.Subnets, dial, n.log.With("part", "subnet-router"))
	if err != nil {
		return fmt.Errorf("node: route subnets: %w", err)
	}
	r.SetMembers(memberPrefixes(book, n.self))
	n.subnets = r
	if len(self.Subnets) > 0 {
		n.log.Info("routing subnets from the mesh through host sockets", "subnets", fmt.Sprint(self.Subnets))
	}
	n.setExitLocked(book, self)
	return nil
}

// memberPrefixes are the allowed IPs of every member but self, by name:
// the subnet router caps flows per member.
func memberPrefixes(book *peerbook.Book, self peerbook.Key) map[string][]netip.Prefix {
	out := make(map[string][]netip.Prefix, len(book.Peers))
	for i := range book.Peers {
		if book.Peers[i].PublicKey != self {
			out[book.Peers[i].Name] = book.Peers[i].AllowedIPs()
		}
	}
	return out
}
