// Command genbook writes a peer book of N members for bench/scale.sh:
// member m0 is the node under test (its private key goes to -key), every
// other odd-numbered member has an endpoint on a loopback address and port
// nobody listens on (127.X.Y.Z:9, offline), every even-numbered one has no
// endpoint (behind NAT, never heard from). The keys come from -seed, so
// -changed writes the same members with serial 2 and every fourth
// endpoint's address moved: a changed book to apply live.
//
//	genbook -n 1000 -key self.key -out book.toml [-changed] [-seed 1]
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"

	"github.com/wgmesh/wgmesh/peerbook"
)

func main() {
	n := flag.Int("n", 100, "members, this node included")
	keyPath := flag.String("key", "", "write m0's private key to this file (if it does not exist)")
	out := flag.String("out", "book.toml", "book file")
	changed := flag.Bool("changed", false, "serial 2, every fourth endpoint moved")
	seed := flag.Uint64("seed", 1, "key seed")
	selfPort := flag.Int("self-port", 51820, "m0's endpoint port")
	flag.Parse()
	if err := run(*n, *keyPath, *out, *changed, *seed, uint16(*selfPort)); err != nil {
		fmt.Fprintln(os.Stderr, "genbook:", err)
		os.Exit(1)
	}
}

func run(n int, keyPath, out string, changed bool, seed uint64, selfPort uint16) error {
	if n < 2 || n > 60000 {
		return fmt.Errorf("-n %d: want 2..60000", n)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)}))
	b := &peerbook.Book{
		Format: peerbook.CurrentFormat,
		Serial: 1,
		Mesh: peerbook.Mesh{
			Networks:            []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			PersistentKeepalive: 25,
		},
	}
	if changed {
		b.Serial = 2
	}
	var self peerbook.PrivateKey
	for i := range n {
		var k peerbook.PrivateKey
		for j := range k {
			k[j] = byte(rng.Uint32())
		}
		if i == 0 {
			self = k
		}
		p := peerbook.Peer{
			Name:      fmt.Sprintf("m%d", i),
			PublicKey: k.Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).Next()},
		}
		switch {
		case i == 0:
			p.Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: selfPort}
		case i%2 == 1:
			host := i
			if changed && i%4 == 1 {
				host += 1 << 20
			}
			ip := netip.AddrFrom4([4]byte{127, byte(1 + host>>16), byte(host >> 8), byte(host)})
			p.Endpoint = peerbook.Endpoint{Host: ip.String(), Port: 9}
		}
		b.Peers = append(b.Peers, p)
	}
	text := peerbook.Marshal(b)
	if _, err := peerbook.Parse(out, text); err != nil {
		return err
	}
	if keyPath != "" {
		if _, err := os.Stat(keyPath); os.IsNotExist(err) {
			if err := peerbook.WriteKeyFile(keyPath, self); err != nil {
				return err
			}
		}
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, text, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
