package peerbook

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex remembers on which line each key and array element of a TOML
// document was written. The decoder hands us plain maps and slices, which
// have no positions; this index is what lets every validation message point
// at the offending line instead of at the whole file.
//
// Paths look like "mesh.networks[1]" or "peer[3].addresses[0]": table and
// key names joined by dots, array elements (including the members of an
// array of tables) by their 0-based index.
type lineIndex struct {
	lines  map[string]int
	starts []int // byte offset of the start of every line
	// scratch builds paths without an allocation per key part.
	scratch []byte
}

// indexLines walks the document with go-toml's low-level parser. It must be
// called only on documents the decoder accepted; if the parser still fails
// the index is simply incomplete, and lookups fall back to enclosing paths.
func indexLines(data []byte) *lineIndex {
	lines := bytes.Count(data, []byte{'\n'}) + 1
	// About two paths per line (a key and its first element): sized once,
	// the map does not grow and rehash through a 10,000-member book.
	ix := &lineIndex{lines: make(map[string]int, 2*lines), starts: make([]int, 1, lines)}
	for i, c := range data {
		if c == '\n' {
			ix.starts = append(ix.starts, i+1)
		}
	}

	var p unstable.Parser
	p.Reset(data)
	arrays := make(map[string]int) // array-table path -> elements so far
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			path, line := ix.headerPath(e, arrays)
			table = path
			ix.set(path, line)
		case unstable.ArrayTable:
			path, line := ix.headerPath(e, arrays)
			n := arrays[path]
			arrays[path] = n + 1
			ix.set(path, line)
			table = path + "[" + strconv.Itoa(n) + "]"
			ix.set(table, line)
		case unstable.KeyValue:
			ix.keyValue(table, e)
		}
	}
	return ix
}

// headerPath resolves a [table] or [[array]] header to a path. A header
// below an array of tables ([[peer.x]]) belongs to the array's last element.
func (ix *lineIndex) headerPath(e *unstable.Node, arrays map[string]int) (string, int) {
	var b strings.Builder
	line := 0
	it := e.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = ix.lineAt(k)
		}
		if b.Len() > 0 {
			if n := arrays[b.String()]; n > 0 {
				b.WriteString("[" + strconv.Itoa(n-1) + "]")
			}
			b.WriteByte('.')
		}
		b.Write(k.Data)
	}
	return b.String(), line
}

func (ix *lineIndex) keyValue(prefix string, e *unstable.Node) {
	buf := append(ix.scratch[:0], prefix...)
	line := 0
	it := e.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = ix.lineAt(k)
		}
		if len(buf) > 0 {
			buf = append(buf, '.')
		}
		buf = append(buf, k.Data...)
	}
	ix.scratch = buf
	path := string(buf)
	ix.set(path, line)
	ix.value(path, e.Value(), line)
}

func (ix *lineIndex) value(path string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			p := path + "[" + strconv.Itoa(i) + "]"
			i++
			l := ix.lineAt(c)
			if l == 0 {
				l = line // nested arrays carry no position of their own
			}
			ix.set(p, l)
			ix.value(p, c, l)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				ix.keyValue(path, c)
			}
		}
	}
}

// lineAt is the 1-based line of a node, or 0 when the node has no range.
func (ix *lineIndex) lineAt(n *unstable.Node) int {
	if n.Raw.Length == 0 && n.Kind != unstable.InlineTable {
		return 0
	}
	return ix.lineOfOffset(int(n.Raw.Offset))
}

// lineOfOffset is computed by binary search over line starts; the parser's
// own Shape rescans the document from the start, which would make indexing
// a book with ten thousand members quadratic.
func (ix *lineIndex) lineOfOffset(off int) int {
	return sort.SearchInts(ix.starts, off+1)
}

func (ix *lineIndex) set(path string, line int) {
	if line <= 0 {
		return
	}
	if _, ok := ix.lines[path]; !ok {
		ix.lines[path] = line
	}
}

// line returns the line of path, or of the nearest enclosing path that has
// one (a missing key is reported at its table's header), or 0.
func (ix *lineIndex) line(path string) int {
	for path != "" {
		if l, ok := ix.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}
