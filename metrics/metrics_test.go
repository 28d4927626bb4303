package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wgmesh/wgmesh/netstack"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// twoNodes starts alpha and beta on loopback and makes them talk, so the
// device counters and handshake times are real.
func twoNodes(t *testing.T) (alpha, beta *node.Node) {
	t.Helper()
	var keys [2]peerbook.PrivateKey
	book := &peerbook.Book{Format: 1, Serial: 7, Source: "book.toml", Mesh: peerbook.Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420, PersistentKeepalive: 25,
	}}
	for i, name := range []string{"alpha", "beta"} {
		keys[i], _ = peerbook.GeneratePrivateKey()
		book.Peers = append(book.Peers, peerbook.Peer{Name: name, PublicKey: keys[i].Public(),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})}})
	}
	var nodes [2]*node.Node
	for i := range nodes {
		n, err := node.New(node.Config{Book: book, PrivateKey: keys[i], ListenPort: node.EphemeralPort})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Up(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[i] = n
	}
	final := *book
	final.Peers = append([]peerbook.Peer(nil), book.Peers...)
	for i, n := range nodes {
		final.Peers[i].Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: n.Status().ListenPort}
	}
	for _, n := range nodes {
		if err := n.Reload(context.Background(), &final); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := nodes[1].Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, strings.Repeat("x", 100000))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := nodes[0].Dial(ctx, "tcp", "beta:80")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, c)
	c.Close()
	return nodes[0], nodes[1]
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("exposition format does not parse: %v", err)
	}
	return mfs
}

func value(t *testing.T, mfs map[string]*dto.MetricFamily, name, peer string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	for _, m := range mf.Metric {
		match := peer == ""
		for _, l := range m.Label {
			if l.GetName() == "peer" && l.GetValue() == peer {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("metric %s{peer=%q} missing", name, peer)
	return 0
}

func TestMetricsMatchStatus(t *testing.T) {
	alpha, _ := twoNodes(t)
	m := New(alpha)
	m.Reloaded(true)
	m.Reloaded(false)
	m.Reloaded(false)
	// Closing packets may still trickle in: the scrape must lie between a
	// status read before it and one after it.
	before := alpha.Status()
	mfs := scrape(t, m.Handler())
	st := alpha.Status()
	beta := st.Peers[0]
	if got := value(t, mfs, "wgmesh_peer_receive_bytes_total", "beta"); got < float64(before.Peers[0].RxBytes) || got > float64(beta.RxBytes) || got < 100000 {
		t.Errorf("rx %v, status %d..%d", got, before.Peers[0].RxBytes, beta.RxBytes)
	}
	if got := value(t, mfs, "wgmesh_peer_transmit_bytes_total", "beta"); got < float64(before.Peers[0].TxBytes) || got > float64(beta.TxBytes) {
		t.Errorf("tx %v, status %d..%d", got, before.Peers[0].TxBytes, beta.TxBytes)
	}
	if got := value(t, mfs, "wgmesh_peer_latest_handshake_timestamp_seconds", "beta"); int64(got) != beta.LastHandshake.Unix() {
		t.Errorf("handshake time %v, status %v", got, beta.LastHandshake)
	}
	if age := value(t, mfs, "wgmesh_peer_handshake_age_seconds", "beta"); age < 0 || age > 60 {
		t.Errorf("handshake age %v", age)
	}
	if got := value(t, mfs, "wgmesh_book_serial", ""); got != float64(st.BookSerial) {
		t.Errorf("serial %v, status %d", got, st.BookSerial)
	}
	if got := value(t, mfs, "wgmesh_book_members", ""); got != 2 {
		t.Errorf("members %v", got)
	}
	if got := value(t, mfs, "wgmesh_peer_path", "beta"); got != 1 {
		t.Errorf("path %v", got)
	}
	for _, m := range mfs["wgmesh_peer_path"].Metric {
		for _, l := range m.Label {
			if l.GetName() == "path" && l.GetValue() != "direct" {
				t.Errorf("path label %q, status says %q", l.GetValue(), beta.Path)
			}
		}
	}
	// The endpoint is the book's literal 127.0.0.1:PORT: known, from the
	// book.
	if got := value(t, mfs, "wgmesh_peer_has_endpoint", "beta"); got != 1 || beta.Endpoint == "" {
		t.Errorf("has_endpoint %v, status endpoint %q", got, beta.Endpoint)
	}
	if got := sources(mfs, "beta"); len(got) != 1 || got["book"] != 1 || beta.EndpointSource != "book" {
		t.Errorf("endpoint_source %v, status source %q", got, beta.EndpointSource)
	}
	reloads := map[string]float64{}
	for _, mm := range mfs["wgmesh_book_reloads_total"].Metric {
		reloads[mm.Label[0].GetValue()] = mm.Counter.GetValue()
	}
	if reloads["applied"] != 1 || reloads["rejected"] != 2 {
		t.Errorf("reloads %v", reloads)
	}
}

// sources returns the wgmesh_peer_endpoint_source series of peer, by
// their source label.
func sources(mfs map[string]*dto.MetricFamily, peer string) map[string]float64 {
	out := map[string]float64{}
	mf, ok := mfs["wgmesh_peer_endpoint_source"]
	if !ok {
		return out
	}
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["peer"] == peer {
			out[labels["source"]] = m.Gauge.GetValue()
		}
	}
	return out
}

type endpointSource struct{}

func (endpointSource) Status() node.Status {
	return node.Status{Name: "alpha", Peers: []node.PeerStatus{
		{Name: "fromdns", Endpoint: "198.51.100.7:51820", EndpointSource: "dns"},
		{Name: "roamed", Endpoint: "203.0.113.9:40000", EndpointSource: "roaming"},
		{Name: "nowhere"},
	}}
}

// wgmesh_peer_has_endpoint is 1 exactly for the members with an endpoint,
// and wgmesh_peer_endpoint_source has one series for each of them, labelled
// with where the endpoint came from, and none for the others.
func TestMetricsEndpointSourceAndHasEndpoint(t *testing.T) {
	mfs := scrape(t, New(endpointSource{}).Handler())
	for peer, want := range map[string]float64{"fromdns": 1, "roamed": 1, "nowhere": 0} {
		if got := value(t, mfs, "wgmesh_peer_has_endpoint", peer); got != want {
			t.Errorf("has_endpoint{peer=%q} = %v, want %v", peer, got, want)
		}
	}
	for peer, want := range map[string]string{"fromdns": "dns", "roamed": "roaming"} {
		if got := sources(mfs, peer); len(got) != 1 || got[want] != 1 {
			t.Errorf("endpoint_source{peer=%q} = %v, want only source=%q at 1", peer, got, want)
		}
	}
	if got := sources(mfs, "nowhere"); len(got) != 0 {
		t.Errorf("endpoint_source for a member without endpoint: %v", got)
	}
}

// /readyz turns 503 again when shutting down begins (up calls
// SetReady(false) before it stops anything), also for a client that
// holds a keep-alive connection from when the node was ready.
func TestReadyzDuringShutdown(t *testing.T) {
	m := New(fakeSource{})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	client := srv.Client()
	get := func() (int, string) {
		resp, err := client.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	m.SetReady(true)
	if c, body := get(); c != 200 {
		t.Fatalf("readyz when ready: %d %s", c, body)
	}
	m.SetReady(false)
	if c, body := get(); c != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("readyz while shutting down: %d %q, want 503 saying so", c, body)
	}
}

func TestHealthAndReady(t *testing.T) {
	m := New(fakeSource{})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/healthz"); c != 200 {
		t.Errorf("healthz %d", c)
	}
	if c := get("/readyz"); c != 503 {
		t.Errorf("readyz before ready: %d", c)
	}
	m.SetReady(true)
	if c := get("/readyz"); c != 200 {
		t.Errorf("readyz when ready: %d", c)
	}
}

type fakeSource struct{}

func (fakeSource) Status() node.Status {
	return node.Status{Name: "alpha", BookSerial: 3, Peers: []node.PeerStatus{
		{Name: "never", PublicKey: "k"},
		{PublicKey: "stranger", NotInBook: true},
	}}
}

// A member that never shook hands has a timestamp of 0 and no age, and a
// peer outside the book is not exported; no metric carries a key.
func TestMetricsEdgeCases(t *testing.T) {
	mfs := scrape(t, New(fakeSource{}).Handler())
	if got := value(t, mfs, "wgmesh_peer_latest_handshake_timestamp_seconds", "never"); got != 0 {
		t.Errorf("timestamp %v", got)
	}
	if _, ok := mfs["wgmesh_peer_handshake_age_seconds"]; ok {
		t.Error("age exported for a member that never shook hands")
	}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if strings.Contains(l.GetValue(), "stranger") {
					t.Errorf("%s exports a key label: %v", name, l)
				}
			}
		}
	}
}

type statusSource node.Status

func (s statusSource) Status() node.Status { return node.Status(s) }

func labelled(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	for _, m := range mfs[name].GetMetric() {
		n := 0
		for _, l := range m.Label {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(labels) {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// The access rules' drops are exported per member and reason, from the
// start (zero) for every member, and those from no member separately.
func TestMetricsDropped(t *testing.T) {
	st := node.Status{Name: "srv", Rules: 2, Dropped: map[string]uint64{"not-a-member": 4}, Peers: []node.PeerStatus{
		{Name: "laptop", Dropped: 7, DroppedBy: map[string]uint64{"no-rule": 6, "fragment": 1}},
		{Name: "ci"},
	}}
	mfs := scrape(t, New(statusSource(st)).Handler())
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"wgmesh_peer_dropped_total", map[string]string{"peer": "laptop", "reason": "no-rule"}, 6},
		{"wgmesh_peer_dropped_total", map[string]string{"peer": "laptop", "reason": "fragment"}, 1},
		{"wgmesh_peer_dropped_total", map[string]string{"peer": "ci", "reason": "no-rule"}, 0},
		{"wgmesh_peer_dropped_total", map[string]string{"peer": "ci", "reason": "fragment"}, 0},
		{"wgmesh_dropped_not_member_total", map[string]string{"reason": "not-a-member"}, 4},
		{"wgmesh_dropped_not_member_total", map[string]string{"reason": "malformed"}, 0},
		{"wgmesh_rules", nil, 2},
	} {
		got, ok := labelled(t, mfs, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if mfs["wgmesh_peer_dropped_total"].GetType() != dto.MetricType_COUNTER {
		t.Error("wgmesh_peer_dropped_total is not a counter")
	}
}

// TestMetricsNetstackTCP: the userspace stack's TCP counters are exported
// in netstack mode, from the node's Status, and absent without them.
func TestMetricsNetstackTCP(t *testing.T) {
	st := node.Status{Name: "srv", TCP: &netstack.TCPStats{Retransmits: 9, Recoveries: 2, Timeouts: 1, SpuriousProbes: 5}}
	mfs := scrape(t, New(statusSource(st)).Handler())
	for name, want := range map[string]float64{
		"wgmesh_netstack_tcp_retransmits_total":     9,
		"wgmesh_netstack_tcp_recoveries_total":      2,
		"wgmesh_netstack_tcp_timeouts_total":        1,
		"wgmesh_netstack_tcp_spurious_probes_total": 5,
	} {
		if got := value(t, mfs, name, ""); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		if mfs[name].GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is not a counter", name)
		}
	}
	st.TCP = nil // TUN mode
	mfs = scrape(t, New(statusSource(st)).Handler())
	if _, ok := mfs["wgmesh_netstack_tcp_retransmits_total"]; ok {
		t.Error("TCP counters exported without a userspace stack")
	}

	// A real netstack node reports its stack's counters.
	alpha, _ := twoNodes(t)
	if alpha.Status().TCP == nil {
		t.Fatal("a netstack node's Status has no TCP counters")
	}
	mfs = scrape(t, New(alpha).Handler())
	value(t, mfs, "wgmesh_netstack_tcp_recoveries_total", "")
}

// TestMetricsIdleMember: a member out of the device (a member with no
// endpoint starts idle on a node that has one) is still exported, with
// path="idle".
func TestMetricsIdleMember(t *testing.T) {
	book := &peerbook.Book{Format: 1, Serial: 1, Source: "book.toml", Mesh: peerbook.Mesh{
		Domain: "mesh", Networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, MTU: 1420,
	}}
	var key peerbook.PrivateKey
	for i, name := range []string{"alpha", "gamma"} {
		k, _ := peerbook.GeneratePrivateKey()
		if i == 0 {
			key = k
		}
		p := peerbook.Peer{Name: name, PublicKey: k.Public(), Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})}}
		if i == 0 {
			p.Endpoint = peerbook.Endpoint{Host: "127.0.0.1", Port: 51820}
		}
		book.Peers = append(book.Peers, p)
	}
	n, err := node.New(node.Config{Book: book, PrivateKey: key, ListenPort: node.EphemeralPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if p := n.Status().Peers[0]; p.Path != node.PathIdle {
		t.Fatalf("gamma's path %q, want idle", p.Path)
	}
	mfs := scrape(t, New(n).Handler())
	found := false
	for _, m := range mfs["wgmesh_peer_path"].Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["peer"] == "gamma" {
			found = true
			if labels["path"] != "idle" {
				t.Errorf("gamma's path label %q, want idle", labels["path"])
			}
		}
	}
	if !found {
		t.Fatal("idle member not exported")
	}
	if got := value(t, mfs, "wgmesh_peer_receive_bytes_total", "gamma"); got != 0 {
		t.Errorf("rx %v", got)
	}
}
