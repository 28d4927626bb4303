package peerbook

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// maxProblems bounds the error of a hostile book with millions of mistakes;
// nobody reads past the first screenfuls anyway.
const maxProblems = 1000

// Load reads and parses the book at path. Messages name the file as given.
func Load(path string) (*Book, error) {
	// A regular file only: a FIFO would block the open, a device never end.
	data, err := fileutil.ReadFileLimit(path, MaxSize)
	if err != nil {
		return nil, fmt.Errorf("peer book: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates a book. file names the source in messages. On
// failure the error is an *Error listing every problem found, in line order.
func Parse(file string, data []byte) (*Book, error) {
	c := &checker{file: file}
	if len(data) > MaxSize {
		c.addLine(0, "the book is %d bytes, over the limit of %d bytes (16 MiB); split off what is not a member list", len(data), MaxSize)
		return nil, c.err()
	}
	// Editors on Windows like to start UTF-8 files with a byte order mark;
	// it carries no meaning and TOML does not allow it, so drop it.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))

	// Raw bytes first: the TOML parser would stop at the first bad byte with
	// a less helpful message, and control characters outside strings are
	// exactly what a hand-edited or injected file would contain.
	if c.checkBytes(data); len(c.problems) > 0 {
		return nil, c.err()
	}

	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		c.syntax(err)
		return nil, c.err()
	}
	c.lines = indexLines(data)
	b := c.book(doc)
	if len(c.problems) > 0 {
		return nil, c.err()
	}
	b.indexKeys()
	return b, nil
}

// checker collects the problems of one book.
type checker struct {
	file     string
	lines    *lineIndex
	problems []Problem
	dropped  int
}

// add records a problem at the line where path was written.
func (c *checker) add(path string, format string, args ...any) {
	line := 0
	if c.lines != nil {
		line = c.lines.line(path)
	}
	c.addLine(line, format, args...)
}

func (c *checker) addLine(line int, format string, args ...any) {
	if len(c.problems) >= maxProblems {
		c.dropped++
		return
	}
	c.problems = append(c.problems, Problem{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Line < c.problems[j].Line })
	if c.dropped > 0 {
		c.problems = append(c.problems, Problem{File: c.file, Msg: fmt.Sprintf("%d more problems not shown", c.dropped)})
	}
	return &Error{Problems: c.problems}
}

// checkBytes reports invalid UTF-8 and control characters, at most one
// problem per line so that a binary file does not produce a wall of text.
func (c *checker) checkBytes(data []byte) {
	line, col := 1, 1
	lastBad := 0
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if lastBad != line {
				c.addLine(line, "invalid UTF-8 (byte 0x%02x at column %d); a peer book must be UTF-8 text", data[i], col)
				lastBad = line
			}
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			if lastBad != line {
				c.addLine(line, "control character %U at column %d; remove it (control characters are not allowed anywhere in a peer book)", r, col)
				lastBad = line
			}
		}
		i += size
		col++
		if r == '\n' {
			line++
			col = 1
		}
	}
}

// syntax turns a decoder error into a problem at the line it reports.
func (c *checker) syntax(err error) {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := trimTOMLPrefix(de.Error())
		if k, ok := strings.CutPrefix(msg, "key "); ok && strings.HasSuffix(k, " is already defined") {
			msg = fmt.Sprintf("key %q is set twice; keep one", strings.TrimSuffix(k, " is already defined"))
		}
		c.addLine(line, "invalid TOML: %s", msg)
		return
	}
	c.addLine(0, "invalid TOML: %s", trimTOMLPrefix(err.Error()))
}

func trimTOMLPrefix(s string) string {
	if len(s) > 6 && s[:6] == "toml: " {
		return s[6:]
	}
	return s
}
