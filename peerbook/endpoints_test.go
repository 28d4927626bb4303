package peerbook

import (
	"strings"
	"testing"
)

// endpoints = [...] and exit survive Marshal, Compare and the membership
// operations, and setting one endpoint form drops the other.
func TestEndpointsAndExitKept(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/paths.toml")
	home, _ := b.PeerByName("home")
	if len(home.Endpoints) != 3 || home.Endpoint != home.Endpoints[0] || home.Endpoints[1].Host != "home.example.net" {
		t.Fatalf("home endpoints = %v (endpoint %v)", home.Endpoints, home.Endpoint)
	}
	if gw, _ := b.PeerByName("gw"); !gw.Exit || len(gw.Endpoints) != 0 || len(gw.EndpointList()) != 1 {
		t.Fatalf("gw = %+v", gw)
	}
	if laptop, _ := b.PeerByName("laptop"); laptop.EndpointList() != nil {
		t.Fatal("laptop has endpoints")
	}
	text := string(Marshal(b))
	if !strings.Contains(text, `endpoints = ["192.168.1.5:51820", "home.example.net:51820", "[2001:db8::5]:51820"]`) || !strings.Contains(text, "exit = true") {
		t.Fatalf("Marshal lost endpoints or exit:\n%s", text)
	}
	again, err := Parse("again", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(b, again); !d.Empty() {
		t.Fatalf("round trip changed the book: %+v", d)
	}

	// Reordering the endpoints is a change.
	eps := []Endpoint{home.Endpoints[1], home.Endpoints[0]}
	nb, err := SetMember(b, "home", Change{Endpoints: &eps})
	if err != nil {
		t.Fatal(err)
	}
	nh, _ := nb.PeerByName("home")
	if nh.Endpoint != eps[0] || len(nh.Endpoints) != 2 {
		t.Fatalf("after set: %v / %v", nh.Endpoint, nh.Endpoints)
	}
	if d := Compare(b, nb); len(d.Changed) != 1 {
		t.Fatalf("reordered endpoints not a change: %+v", d)
	}
	// A single endpoint replaces the list.
	one := Endpoint{Host: "192.0.2.1", Port: 51820}
	nb, err = SetMember(nb, "home", Change{Endpoint: &one})
	if err != nil {
		t.Fatal(err)
	}
	if nh, _ := nb.PeerByName("home"); nh.Endpoints != nil || nh.Endpoint != one {
		t.Fatalf("endpoint did not replace the list: %+v", nh)
	}
	no := false
	nb, err = SetMember(nb, "gw", Change{Exit: &no})
	if err != nil {
		t.Fatal(err)
	}
	if gw, _ := nb.PeerByName("gw"); gw.Exit {
		t.Fatal("exit not cleared")
	}
	if _, err := SetMember(b, "home", Change{Endpoint: &one, Endpoints: &eps}); err == nil {
		t.Fatal("accepted endpoint and endpoints together")
	}

	added, err := AddMember(b, Member{Name: "nas", PublicKey: mustKey(t, "uJ9v+M4d3PcVDzqc/LRf4q0/CGRW7ccvE9LqwYvuUk4="), Endpoints: eps, Exit: true})
	if err != nil {
		t.Fatal(err)
	}
	if nas, _ := added.PeerByName("nas"); nas.Endpoint != eps[0] || len(nas.Endpoints) != 2 || !nas.Exit {
		t.Fatalf("added: %+v", nas)
	}
}
