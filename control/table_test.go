package control

import (
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/node"
)

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{10 << 20, "10.0 MiB"}, {3 << 30, "3.0 GiB"}, {1 << 62, "4.0 EiB"},
	} {
		if got := HumanBytes(tc.n); got != tc.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestHandshakeAge(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{3 * time.Second, "3s ago"}, {250 * time.Second, "4m10s ago"},
		{2*time.Hour + 5*time.Minute, "2h5m ago"}, {76 * time.Hour, "3d4h ago"},
		{-time.Second, "0s ago"}, // clocks may disagree slightly
	} {
		if got := HandshakeAge(now.Add(-tc.ago), now); got != tc.want {
			t.Errorf("HandshakeAge(%v) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := HandshakeAge(time.Time{}, now); got != "never" {
		t.Errorf("zero handshake = %q, want never", got)
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, sample, sample.Peers[0].LastHandshake.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a title, a header and one row, got:\n%s", b.String())
	}
	for _, want := range []string{"alpha", "10.42.0.1", "51820", "serial 3"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("title %q lacks %q", lines[0], want)
		}
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "NAME ADDRESSES ENDPOINT PATH HANDSHAKE RX TX" {
		t.Errorf("header = %q", lines[1])
	}
	for _, want := range []string{"beta", "10.42.0.2,fd42:42::2", "127.0.0.1:40000 (registry)", "relayed via gamma", "3s ago", "1.5 KiB", "10.0 MiB"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("row %q lacks %q", lines[2], want)
		}
	}
}

// With access rules in force the title says how many and a DROPPED
// column counts each member's drops with their reasons; drops from no
// member get a line of their own. Without rules the table is unchanged
// (TestWriteTable).
func TestWriteTableDrops(t *testing.T) {
	st := sample
	st.Rules = 3
	st.Dropped = map[string]uint64{"not-a-member": 2}
	st.Peers = append([]node.PeerStatus(nil), sample.Peers...)
	st.Peers[0].Dropped, st.Peers[0].DroppedBy = 12, map[string]uint64{"no-rule": 11, "fragment": 1}
	var b strings.Builder
	if err := WriteTable(&b, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a title, a header, one row and the no-member line, got:\n%s", b.String())
	}
	if !strings.Contains(lines[0], "access rules 3") {
		t.Errorf("title %q", lines[0])
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "NAME ADDRESSES ENDPOINT PATH HANDSHAKE RX TX DROPPED" {
		t.Errorf("header = %q", lines[1])
	}
	if !strings.HasSuffix(lines[2], "12 (fragment 1, no-rule 11)") {
		t.Errorf("row %q", lines[2])
	}
	if lines[3] != "dropped from addresses of no member: 2 (not-a-member 2)" {
		t.Errorf("last line %q", lines[3])
	}
}
