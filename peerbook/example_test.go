package peerbook_test

import (
	"fmt"

	"github.com/wgmesh/wgmesh/peerbook"
)

func ExampleParse() {
	book, err := peerbook.Parse("book.toml", []byte(`format = 1

[mesh]
networks = ["10.42.0.0/16"]

[[peer]]
name = "aws"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.42.0.1"]
endpoint = "aws.example.com:51820"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := book.PeerByName("aws.mesh")
	fmt.Println(p.Name, p.Addresses, p.Endpoint, book.ListenPortOf(p))
	// Output: aws [10.42.0.1] aws.example.com:51820 51820
}

func ExampleParse_problems() {
	_, err := peerbook.Parse("book.toml", []byte(`format = 1

[mesh]
networks = ["10.42.0.0/16"]

[[peer]]
name = "home"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.9.0.2"]
subnets = ["192.168.1.1/24"]
`))
	fmt.Println(err)
	// Output:
	// book.toml:9: peer "home": address 10.9.0.2 is outside the mesh networks (10.42.0.0/16); pick an address inside one of them
	// book.toml:10: peer "home": subnet "192.168.1.1/24" is not canonical: it has host bits set; write "192.168.1.0/24"
}

func ExampleCompare() {
	old, _ := peerbook.Parse("old.toml", []byte(`format = 1
[mesh]
networks = ["10.42.0.0/16"]
[[peer]]
name = "aws"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.42.0.1"]
`))
	nu, _ := peerbook.Parse("new.toml", []byte(`format = 1
[mesh]
networks = ["10.42.0.0/16"]
[[peer]]
name = "amazon"
public_key = "zGfHzUzsvbD9EsL8kZjYxyNCKDKnYqYJ308kvLPShmo="
addresses = ["10.42.0.1"]
[[peer]]
name = "home"
public_key = "MMxWCN3DpxUEYCTS0MEfrljU/rA87x5yLPDrfVyV3Qo="
addresses = ["10.42.0.2"]
`))
	d := peerbook.Compare(old, nu)
	for _, c := range d.Changed {
		fmt.Printf("changed: %s -> %s\n", c.Old.Name, c.New.Name)
	}
	for _, p := range d.Added {
		fmt.Println("added:", p.Name)
	}
	// Output:
	// changed: aws -> amazon
	// added: home
}
