package peerbook

import (
	"sort"
	"strconv"
	"strings"
)

// The decoder yields untyped values (map[string]any, []any, int64, ...) so
// that one wrong type does not stop the whole check: each accessor below
// reports a wrong type at its line and lets validation carry on.

// typeName describes a decoded TOML value for messages.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date/time"
}

// str returns v as a string or reports that field (named for messages, e.g.
// `peer "home": name`) should have been one.
func (c *checker) str(path, field string, v any, example string) (string, bool) {
	s, ok := v.(string)
	if !ok {
		c.add(path, "%s must be a string like %s, not %s", field, example, typeName(v))
	}
	return s, ok
}

// integer returns v if it is an integer within [lo, hi].
func (c *checker) integer(path, field string, v any, lo, hi int64) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		c.add(path, "%s must be an integer between %d and %d, not %s", field, lo, hi, typeName(v))
		return 0, false
	}
	if n < lo || n > hi {
		c.add(path, "%s must be between %d and %d, got %d", field, lo, hi, n)
		return 0, false
	}
	return n, true
}

func (c *checker) boolean(path, field string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		c.add(path, "%s must be true or false, not %s", field, typeName(v))
	}
	return b, ok
}

// strList returns the strings of an array, reporting a non-array and each
// non-string element. The second result lists the element paths.
func (c *checker) strList(path, field string, v any, example string) ([]string, []string, bool) {
	arr, ok := v.([]any)
	if !ok {
		if s, isStr := v.(string); isStr {
			c.add(path, "%s must be an array of strings, e.g. [%s], not a single string; write [%s]", field, example, strconv.Quote(s))
		} else {
			c.add(path, "%s must be an array of strings like [%s], not %s", field, example, typeName(v))
		}
		return nil, nil, false
	}
	var vals, paths []string
	for i, e := range arr {
		p := path + "[" + strconv.Itoa(i) + "]"
		s, ok := e.(string)
		if !ok {
			c.add(p, "%s: element %d must be a string like %s, not %s", field, i+1, example, typeName(e))
			continue
		}
		vals = append(vals, s)
		paths = append(paths, p)
	}
	return vals, paths, true
}

// unknownKeys reports every key of t that is not in known, suggesting the
// nearest known key for typos.
func (c *checker) unknownKeys(prefix, where string, t map[string]any, known []string) {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if contains(known, k) {
			continue
		}
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		hint := ""
		if s := nearest(k, known); s != "" {
			hint = " (did you mean " + strconv.Quote(s) + "?)"
		}
		c.add(path, "%sunknown key %s%s; %s", where, strconv.Quote(k), hint, allowedKeys(prefix, known))
	}
}

func allowedKeys(prefix string, known []string) string {
	switch {
	case prefix == "":
		return "the top level of a book allows format, serial, [mesh], [[peer]] and [[rule]]"
	case strings.HasPrefix(prefix, "rule["):
		return "a [[rule]] allows " + strings.Join(known, ", ")
	case prefix == "mesh":
		return "[mesh] allows " + strings.Join(known, ", ")
	}
	return "a [[peer]] allows " + strings.Join(known, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// nearest returns the known key within a small edit distance of k, if any:
// "adresses" should say "addresses", "Name" should say "name".
func nearest(k string, known []string) string {
	best, bestD := "", 3
	lk := strings.ToLower(k)
	for _, s := range known {
		if d := editDistance(lk, s); d < bestD {
			best, bestD = s, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30 // keys that long are no typo of ours
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
