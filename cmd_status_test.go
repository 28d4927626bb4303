package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteJSONDocument: for a pipe or a file, status --json prints the
// node's document as it came, one line; it is indented only for a
// terminal (not reachable from a test without a pty).
func TestWriteJSONDocument(t *testing.T) {
	doc := []byte(`{"name":"alpha","peers":[{"name":"beta"}]}`)
	var buf bytes.Buffer
	if err := writeJSONDocument(&buf, doc); err != nil || buf.String() != string(doc)+"\n" {
		t.Fatalf("to a buffer: %q, %v; want the document and a newline", buf.String(), err)
	}
	path := filepath.Join(t.TempDir(), "out.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSONDocument(f, doc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(path); string(got) != string(doc)+"\n" {
		t.Fatalf("to a file: %q; want the document as it came", got)
	}
}
