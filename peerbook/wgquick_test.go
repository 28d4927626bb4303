package peerbook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readKey(t *testing.T, name string) PrivateKey {
	t.Helper()
	data, err := os.ReadFile("../testdata/keys/" + name + ".key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKey(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestExportWGQuickGolden(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	home, err := ExportWGQuick(b, "home", nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "../testdata/export/design-home.conf", home)

	k := readKey(t, "aws")
	aws, err := ExportWGQuick(b, "AWS.mesh", &k)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "../testdata/export/design-aws.conf", aws)
}

func TestExportWGQuickErrors(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	_, err := ExportWGQuick(b, "nas", nil)
	if err == nil || !strings.Contains(err.Error(), `no member named "nas"`) || !strings.Contains(err.Error(), "aws, home") {
		t.Errorf("unknown member: %v", err)
	}
	k := readKey(t, "home")
	_, err = ExportWGQuick(b, "aws", &k)
	if err == nil || !strings.Contains(err.Error(), "does not belong") || strings.Contains(err.Error(), k.Encode()) {
		t.Errorf("wrong key: %v", err)
	}
	b.Peers[1].Endpoint = Endpoint{Host: "1.2.3.4\nPostUp = rm -rf /", Port: 1}
	if _, err := ExportWGQuick(b, "aws", nil); err == nil {
		t.Error("exported an endpoint with a newline")
	}
}

func importDir(t *testing.T, dir string) (*Imported, error) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.conf"))
	var in []WGQuickFile
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, WGQuickFile{Name: filepath.Base(f), Data: data})
	}
	return ImportWGQuick(in)
}

func TestImportHubAndSpoke(t *testing.T) {
	im, err := importDir(t, "../testdata/wgquick/hub-spoke")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "../testdata/wgquick/hub-spoke.book.golden", im.TOML)
	golden(t, "../testdata/wgquick/hub-spoke.notes.golden", []byte(strings.Join(im.Notes, "\n")+"\n"))
	checkInvariants(t, im.Book)

	hub, _ := im.Book.PeerByName("hub")
	bob, _ := im.Book.PeerByName("bob")
	if len(hub.Subnets) != 0 {
		t.Errorf("the hub's forwarding became subnets: %v", hub.Subnets)
	}
	if len(bob.Subnets) != 1 || bob.Subnets[0].String() != "192.168.50.0/24" {
		t.Errorf("bob's LAN: %v", bob.Subnets)
	}
	if bob.PublicKey.String() != "/gY/VqnKpfNzJM3TWIl+y4EvnSP+skCL8QLnsCrnNH0=" {
		t.Errorf("bob's key not learnt from hub.conf: %s", bob.PublicKey)
	}
}

// Exporting every member and importing the configs gives the book back,
// except what wg-quick cannot say (registry, relay) and spelled-out
// defaults.
func TestExportImportRoundTrip(t *testing.T) {
	b := mustParseFile(t, "../testdata/good/design.toml")
	var files []WGQuickFile
	for _, p := range b.Peers {
		k := readKey(t, p.Name)
		conf, err := ExportWGQuick(b, p.Name, &k)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, WGQuickFile{Name: "/etc/wireguard/" + p.Name + ".conf", Data: conf})
	}
	im, err := ImportWGQuick(files)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b.Peers {
		p := &b.Peers[i]
		p.Registry, p.Relay = false, false
		if p.ListenPort == b.ListenPortOf(&Peer{Endpoint: p.Endpoint}) {
			p.ListenPort = 0
		}
	}
	d := Compare(b, im.Book)
	if !d.Empty() {
		t.Errorf("round trip changed the book: %+v\n%s", d, im.TOML)
	}
	if len(im.Notes) != 0 {
		t.Errorf("notes on a clean import: %q", im.Notes)
	}
}

func TestImportRefuses(t *testing.T) {
	hub, _ := os.ReadFile("../testdata/wgquick/hub-spoke/hub.conf")
	alice, _ := os.ReadFile("../testdata/wgquick/hub-spoke/alice.conf")
	tests := []struct {
		name  string
		files []WGQuickFile
		want  string
	}{
		{"preshared key", []WGQuickFile{{"hub.conf", hub}, {"alice.conf", []byte(string(alice) + "PresharedKey = " + keyA + "\n")}}, "alice.conf:12: PresharedKey cannot be expressed"},
		{"unknown key", []WGQuickFile{{"hub.conf", []byte(strings.Replace(string(hub), "ListenPort", "ListenPrt", 1))}}, "hub.conf:6: unknown [Interface] key ListenPrt"},
		{"key not learnable", []WGQuickFile{{"hub.conf", hub}, {"carol.conf", []byte("[Interface]\nAddress = 10.0.0.9/24\n")}}, "carol.conf:1: no PrivateKey, and no other file has a [Peer] with AllowedIPs = 10.0.0.9/32"},
		{"bad file name", []WGQuickFile{{"my_hub.conf", hub}}, `member name "my_hub"`},
		{"no interface", []WGQuickFile{{"x.conf", []byte("[Peer]\nPublicKey = " + keyA + "\n")}}, "x.conf: no [Interface] section"},
		{"bad endpoint", []WGQuickFile{{"alice.conf", []byte(strings.Replace(string(alice), "hub.example.com:51820", "hub.example.com", 1))}}, `alice.conf:10: endpoint "hub.example.com" has no port`},
		{"route to two owners", []WGQuickFile{{"hub.conf", []byte(string(hub) + "\n[Peer]\nPublicKey = " + keyC + "\nAllowedIPs = 10.0.0.4/32, 192.168.50.0/24\n")}}, "hub.conf:22: AllowedIPs 192.168.50.0/24 routes to member3, but hub.conf:18 routes it to member2"},
		{"no files", nil, "no wg-quick files"},
		{"hub address unknown", []WGQuickFile{{"alice.conf", alice}}, "alice.conf:7: [Peer] njHc4vslmysyBz/bavJqfHsb7ojjMJh7ZOtZ1seCZCg= has no AllowedIPs address inside the mesh networks (10.0.0.0/24)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, err := ImportWGQuick(tt.files)
			if err == nil {
				t.Fatalf("accepted:\n%s", im.TOML)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// A spoke that gives only a host address learns the network from the route
// to its hub, and peers no file describes are still members.
func TestImportGuesses(t *testing.T) {
	spoke := "[Interface]\nPrivateKey = " + readKey(t, "laptop").Encode() + "\nAddress = 10.8.0.2/32\n\n" +
		"[Peer]\nPublicKey = " + keyA + "\nAllowedIPs = 10.8.0.1/32, 10.8.0.0/24, 0.0.0.0/0\nEndpoint = [2001:db8::1]:51820\n\n" +
		"[Peer]\nPublicKey = " + keyB + "\nAllowedIPs = 10.8.0.3/32, 192.168.7.0/24\n"
	im, err := ImportWGQuick([]WGQuickFile{{"laptop.conf", []byte(spoke)}})
	if err != nil {
		t.Fatal(err)
	}
	want := "format = 1\nserial = 1\n\n[mesh]\ndomain = \"mesh\"\nnetworks = [\"10.8.0.0/24\"]\nlisten_port = 51820\nmtu = 1420\npersistent_keepalive = 25\n\n" +
		"[[peer]]\nname = \"laptop\"\npublic_key = \"EG5s6psBQfTap3EclLADZLDBk3NMZZrFw0sFI2dngHg=\"\naddresses = [\"10.8.0.2\"]\n"
	if !strings.HasPrefix(string(im.TOML), want) {
		t.Errorf("got\n%s", im.TOML)
	}
	a, okA := im.Book.PeerByKey(mustKey(t, keyA))
	b, okB := im.Book.PeerByKey(mustKey(t, keyB))
	if !okA || !okB || len(a.Addresses) != 0 && a.Addresses[0].String() == "" || b.Subnets[0].String() != "192.168.7.0/24" || a.Endpoint.String() != "[2001:db8::1]:51820" {
		t.Errorf("members: %+v", im.Book.Peers)
	}
	notes := strings.Join(im.Notes, "\n")
	for _, n := range []string{"using 10.8.0.0/24", "exit node", "added as member \"member1\""} {
		if !strings.Contains(notes, n) {
			t.Errorf("notes lack %q:\n%s", n, notes)
		}
	}
}

func mustKey(t *testing.T, s string) Key {
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Two hubs both claiming a LAN is a conflict, not a crash; a file already
// called member1.conf does not collide with a generated name.
func TestImportEdgeCases(t *testing.T) {
	kHub1, kHub2 := readKey(t, "aws"), readKey(t, "home")
	spoke := "[Interface]\nPrivateKey = " + readKey(t, "laptop").Encode() + "\nAddress = 10.8.0.2/24\n\n" +
		"[Peer]\nPublicKey = " + kHub1.Public().String() + "\nAllowedIPs = 10.8.0.1/32, 10.8.0.0/24, 192.168.7.0/24\n\n" +
		"[Peer]\nPublicKey = " + kHub2.Public().String() + "\nAllowedIPs = 10.8.0.3/32, 10.8.0.0/24, 192.168.7.0/24\n"
	_, err := ImportWGQuick([]WGQuickFile{{"laptop.conf", []byte(spoke)}})
	if err == nil || !strings.Contains(err.Error(), "a route belongs to one member") {
		t.Errorf("err = %v", err)
	}

	m1 := "[Interface]\nPrivateKey = " + readKey(t, "phone").Encode() + "\nAddress = 10.8.0.9/24\n"
	spoke = strings.ReplaceAll(spoke, ", 192.168.7.0/24", "")
	im, err := ImportWGQuick([]WGQuickFile{{"member1.conf", []byte(m1)}, {"laptop.conf", []byte(spoke)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := im.Book.PeerByName("member2"); !ok {
		t.Errorf("generated names: %s", im.TOML)
	}
}
