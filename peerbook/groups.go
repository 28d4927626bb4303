package peerbook

import (
	"fmt"
	"strings"
)

// groups checks a member's groups: DNS labels, each listed once (ignoring
// case, as names are), so that access rules can name them as group:NAME.
func (c *checker) groups(path string, st peerState, t map[string]any) []string {
	v, ok := t["groups"]
	if !ok {
		return nil
	}
	vals, paths, ok := c.strList(path+".groups", st.label+": groups", v, `"staff"`)
	if !ok {
		return nil
	}
	seen := make(map[string]bool, len(vals))
	var out []string
	for i, s := range vals {
		if !validLabel(s) {
			why := "use 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen"
			if r, bad := controlChar(s); bad {
				why = fmt.Sprintf("it contains control character %U; %s", r, why)
			}
			c.add(paths[i], "%s: group %q is not a DNS label; %s", st.label, s, why)
			continue
		}
		lower := strings.ToLower(s)
		if seen[lower] {
			c.add(paths[i], "%s: group %q is listed twice; list it once (groups are compared ignoring case)", st.label, s)
			continue
		}
		seen[lower] = true
		out = append(out, s)
	}
	return out
}
