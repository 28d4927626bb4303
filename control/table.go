package control

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wgmesh/wgmesh/node"
)

// WriteTable prints st for people: a line about this node, then one row
// per member with its addresses, endpoint, handshake age and traffic.
// Handshake ages are measured from now. When access rules are in force
// (or have dropped packets), the title says how many rules and a DROPPED
// column counts the packets from each member that they dropped; a line
// below counts those from addresses of no member.
func WriteTable(w io.Writer, st node.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rules := ""
	if st.Rules > 0 {
		rules = fmt.Sprintf("  access rules %d", st.Rules)
	}
	fmt.Fprintf(tw, "%s (%s)  %s  udp port %d  book serial %d%s\n",
		st.Name, st.Mode, joinAddrs(st.Addresses), st.ListenPort, st.BookSerial, rules)
	drops := st.Rules > 0 || len(st.Dropped) > 0
	for _, p := range st.Peers {
		drops = drops || p.Dropped > 0
	}
	header := "NAME\tADDRESSES\tENDPOINT\tPATH\tHANDSHAKE\tRX\tTX"
	if drops {
		header += "\tDROPPED"
	}
	fmt.Fprintln(tw, header)
	for _, p := range st.Peers {
		ep := p.Endpoint
		if ep == "" {
			ep = "-"
		} else if p.EndpointSource != "" {
			ep += " (" + p.EndpointSource + ")"
		}
		name, path := p.Name, p.Path
		if p.NotInBook {
			name = "(not in book) " + p.PublicKey
		}
		if path == "" {
			path = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", name, joinAddrs(p.Addresses), ep, path,
			HandshakeAge(p.LastHandshake, now), HumanBytes(p.RxBytes), HumanBytes(p.TxBytes))
		if drops {
			fmt.Fprintf(tw, "\t%s", dropCount(p.Dropped, p.DroppedBy))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Dropped) > 0 {
		var total uint64
		for _, v := range st.Dropped {
			total += v
		}
		_, err := fmt.Fprintf(w, "dropped from addresses of no member: %s\n", dropCount(total, st.Dropped))
		return err
	}
	return nil
}

// dropCount is "0", or a total with its reasons: "12 (no-rule 11, fragment 1)".
func dropCount(total uint64, by map[string]uint64) string {
	if total == 0 {
		return "0"
	}
	reasons := make([]string, 0, len(by))
	for r := range by {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for i, r := range reasons {
		reasons[i] = fmt.Sprintf("%s %d", r, by[r])
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(reasons, ", "))
}

func joinAddrs(as []netip.Addr) string {
	if len(as) == 0 {
		return "-"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// HandshakeAge formats the time since t as "3s ago", "4m10s ago",
// "2h5m ago" or "3d4h ago"; a zero t is "never".
func HandshakeAge(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds ago", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds ago", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm ago", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh ago", s/86400, s%86400/3600)
}

// HumanBytes formats n with binary units: "512 B", "1.5 KiB", "10.0 MiB".
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
