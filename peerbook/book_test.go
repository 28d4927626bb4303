package peerbook

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// golden compares got with the golden file, or rewrites it under -update.
// Rewritten goldens must still be read by a human before committing.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./peerbook -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func mustParseFile(t testing.TB, path string) *Book {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(filepath.Base(path), data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func TestGoodBooks(t *testing.T) {
	files, _ := filepath.Glob("../testdata/good/*.toml")
	if len(files) == 0 {
		t.Fatal("no good books in testdata/good")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if b.Source != f {
				t.Errorf("Source = %q, want %q", b.Source, f)
			}
			checkInvariants(t, b)
		})
	}
}

// TestBadBooks parses every testdata/bad/NAME.toml and compares the error,
// one problem per line, with NAME.golden.
func TestBadBooks(t *testing.T) {
	files, _ := filepath.Glob("../testdata/bad/*.toml")
	if len(files) < 25 {
		t.Fatalf("only %d bad books in testdata/bad", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Parse("book.toml", data)
			if err == nil {
				t.Fatalf("accepted: %+v", b)
			}
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Problems) == 0 {
				t.Fatalf("error is %T, want *Error with problems: %v", err, err)
			}
			for _, p := range perr.Problems {
				if strings.ContainsAny(p.Msg, "\n\r") {
					t.Errorf("message spans lines: %q", p.Msg)
				}
			}
			golden(t, strings.TrimSuffix(f, ".toml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}
