package node

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ratelimiter"

	"github.com/wgmesh/wgmesh/peerbook"
)

// lazyBind wraps the node's conn.Bind so that a handshake initiation from
// an idle member (one removed from the device, see lazy.go) configures
// that member before wireguard-go sees the message: wireguard-go drops an
// initiation from a key it does not know, and upstream wireguard-go has no
// hook to ask for it. Only while some member is idle does it look at what
// it receives; then a message of initiation size and type whose MAC1 is
// right (cheap, keyed by this node's public key) is opened as far as the
// Noise IK responder's first steps go, which names the initiator's static
// key. Garbage costs one BLAKE2s; a valid-looking initiation one X25519,
// rate-limited per source address, as wireguard-go limits handshakes,
// once there are more than peekLoad a second.
type lazyBind struct {
	conn.Bind
	peek *initiationPeeker
	// wake is called with the initiator's key; it returns once the member
	// is configured (or is not idle). Set before the device opens the bind.
	wake func(peerbook.Key)
	// idle reports whether any member is idle now.
	idle func() bool
	rate ratelimiter.Ratelimiter
	// loadSec and loadN count the peeks of the current second.
	loadSec, loadN atomic.Int64
}

func newLazyBind(b conn.Bind, priv peerbook.PrivateKey, idle func() bool, wake func(peerbook.Key)) *lazyBind {
	lb := &lazyBind{Bind: b, peek: newInitiationPeeker(priv), wake: wake, idle: idle}
	lb.rate.Init()
	return lb
}

// Open wraps every receive function of the inner bind.
func (b *lazyBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return openWrapped(b.Bind, port, b.receive)
}

// openWrapped opens inner and returns its receive functions, each wrapped
// by wrap: the shape of every bind wrapper that watches what arrives.
func openWrapped(inner conn.Bind, port uint16, wrap func(conn.ReceiveFunc) conn.ReceiveFunc) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = wrap(fn)
	}
	return out, actual, nil
}

func (b *lazyBind) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		if n == 0 || !b.idle() {
			return n, err
		}
		for i := 0; i < n; i++ {
			msg := packets[i][:sizes[i]]
			if len(msg) != device.MessageInitiationSize || binary.LittleEndian.Uint32(msg) != device.MessageInitiationType {
				continue
			}
			if !b.peek.mac1OK(msg) {
				continue
			}
			if b.underLoad() {
				// As wireguard-go does under load: a source may send
				// only so many handshakes a second.
				if src := eps[i].DstIP(); src.IsValid() && !b.rate.Allow(src) {
					continue
				}
			}
			if k, ok := b.peek.initiator(msg); ok {
				b.wake(k)
			}
		}
		return n, err
	}
}

// peekLoad is how many peeks a second the bind makes before it limits them
// per source address (to wireguard-go's 20 a second): one X25519 each, so
// unlimited peeks cost at most a few percent of a core.
const peekLoad = 500

// underLoad counts a peek and reports whether this second has seen more
// than peekLoad.
func (b *lazyBind) underLoad() bool {
	sec := time.Now().Unix()
	if b.loadSec.Load() != sec {
		b.loadSec.Store(sec)
		b.loadN.Store(0)
	}
	return b.loadN.Add(1) > peekLoad
}

// Close closes the inner bind. The rate limiter's cleaner stops with the
// node (closeRate), not here: wireguard-go closes and reopens the bind when
// the listen port changes.
func (b *lazyBind) closeRate() { b.rate.Close() }

// initiationPeeker does the first steps of the Noise IK responder (the
// WireGuard whitepaper, section 5.4.2) with this node's static key: enough
// to decrypt the initiator's static public key, nothing more. It keeps no
// state between messages and never logs or returns the private key.
type initiationPeeker struct {
	priv   [32]byte
	pub    [32]byte
	mac1   device.CookieChecker
	hash0  [blake2s.Size]byte // HASH(HASH(CONSTRUCTION) || IDENTIFIER) mixed with own public key
	chain0 [blake2s.Size]byte // HASH(CONSTRUCTION)
	zero12 [chacha20poly1305.NonceSize]byte
}

func newInitiationPeeker(priv peerbook.PrivateKey) *initiationPeeker {
	p := &initiationPeeker{priv: priv}
	pub := priv.Public()
	p.pub = pub
	p.mac1.Init(device.NoisePublicKey(pub))
	p.chain0 = blake2s.Sum256([]byte(device.NoiseConstruction))
	var h [blake2s.Size]byte
	mixHash(&h, &p.chain0, []byte(device.WGIdentifier))
	mixHash(&p.hash0, &h, p.pub[:])
	return p
}

// mac1OK checks the initiation's MAC1, which only a sender that knows this
// node's public key can compute.
func (p *initiationPeeker) mac1OK(msg []byte) bool { return p.mac1.CheckMAC1(msg) }

// Offsets in a handshake initiation: type(4) sender(4) ephemeral(32)
// static(32+16) timestamp(12+16) mac1(16) mac2(16).
const (
	initEphemeral = 8
	initStatic    = initEphemeral + 32
	initStaticEnd = initStatic + 32 + chacha20poly1305.Overhead
)

// initiator returns the static public key the initiation msg carries,
// decrypted as the responder would, or false when it does not decrypt
// (not for this node's key, or corrupt).
func (p *initiationPeeker) initiator(msg []byte) (peerbook.Key, bool) {
	if len(msg) != device.MessageInitiationSize {
		return peerbook.Key{}, false
	}
	ephemeral := msg[initEphemeral:initStatic]
	var h, chain, key [blake2s.Size]byte
	mixHash(&h, &p.hash0, ephemeral)
	device.KDF1(&chain, p.chain0[:], ephemeral)
	ss, err := curve25519.X25519(p.priv[:], ephemeral)
	if err != nil {
		return peerbook.Key{}, false // a low-order point
	}
	device.KDF2(&chain, &key, chain[:], ss)
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return peerbook.Key{}, false
	}
	var k peerbook.Key
	if _, err := aead.Open(k[:0], p.zero12[:], msg[initStatic:initStaticEnd], h[:]); err != nil {
		return peerbook.Key{}, false
	}
	return k, true
}

func mixHash(dst, h *[blake2s.Size]byte, data []byte) {
	s, _ := blake2s.New256(nil)
	s.Write(h[:])
	s.Write(data)
	s.Sum(dst[:0])
}
