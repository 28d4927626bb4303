package peerbook

import (
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, patterns ...string) {
	for _, pat := range patterns {
		files, _ := filepath.Glob(pat)
		for _, name := range files {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts is a book that
// keeps its promises and survives Marshal unchanged.
func FuzzParse(f *testing.F) {
	addSeeds(f, "../testdata/good/*.toml", "../testdata/bad/*.toml")
	f.Add([]byte(minimal))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse("fuzz.toml", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		checkInvariants(t, b)
		text := Marshal(b)
		again, err := Parse("marshalled.toml", text)
		if err != nil {
			t.Fatalf("Marshal output refused: %v\n%s", err, text)
		}
		if !sameBook(b, again) {
			t.Fatalf("round trip changed the book:\n%s", text)
		}
		if d := Compare(b, again); !d.Empty() {
			t.Fatalf("Compare after round trip: %+v", d)
		}
		for i := range b.Peers {
			if _, err := ExportWGQuick(b, b.Peers[i].Name, nil); err != nil {
				t.Fatalf("export of an accepted book: %v", err)
			}
		}
	})
}

// FuzzImportWGQuick: the import never panics and only returns books that
// parse.
func FuzzImportWGQuick(f *testing.F) {
	addSeeds(f, "../testdata/wgquick/*/*.conf", "../testdata/export/*.conf")
	f.Fuzz(func(t *testing.T, data []byte) {
		hub, _ := os.ReadFile("../testdata/wgquick/hub-spoke/hub.conf")
		im, err := ImportWGQuick([]WGQuickFile{{Name: "hub.conf", Data: hub}, {Name: "fuzz.conf", Data: data}})
		if err != nil {
			return
		}
		if _, err := Parse("imported.toml", im.TOML); err != nil {
			t.Fatalf("import produced a refused book: %v", err)
		}
	})
}
