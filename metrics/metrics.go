// Package metrics exposes a running node to Prometheus: per-member traffic,
// handshake age and endpoint changes, the applied book's serial and the
// results of book reloads, the packets the access rules dropped per
// member and reason, in netstack mode the userspace TCP's loss repairs,
// plus /healthz and /readyz for orchestrators.
//
// Values are read from the node's Status at scrape time, so the numbers a
// scrape shows are the ones `wgmesh status` shows. Nothing secret is ever
// exported: members are labelled by name only.
package metrics

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wgmesh/wgmesh/node"
)

// Source is what the metrics are read from; *node.Node implements it.
type Source interface {
	Status() node.Status
}

// Metrics collects a node's metrics on a registry of its own.
type Metrics struct {
	src      Source
	reg      *prometheus.Registry
	reloads  *prometheus.CounterVec
	ready    atomic.Bool
	now      func() time.Time
	handlers http.Handler
}

var (
	rxDesc = prometheus.NewDesc("wgmesh_peer_receive_bytes_total",
		"Bytes received from a member through the tunnel.", []string{"peer"}, nil)
	txDesc = prometheus.NewDesc("wgmesh_peer_transmit_bytes_total",
		"Bytes sent to a member through the tunnel.", []string{"peer"}, nil)
	handshakeAgeDesc = prometheus.NewDesc("wgmesh_peer_handshake_age_seconds",
		"Seconds since the latest handshake with a member; absent before the first.", []string{"peer"}, nil)
	handshakeTimeDesc = prometheus.NewDesc("wgmesh_peer_latest_handshake_timestamp_seconds",
		"Unix time of the latest handshake with a member; 0 before the first.", []string{"peer"}, nil)
	endpointChangesDesc = prometheus.NewDesc("wgmesh_peer_endpoint_changes_total",
		"Endpoint changes this node made for a member (DNS re-resolution).", []string{"peer"}, nil)
	peerUpDesc = prometheus.NewDesc("wgmesh_peer_has_endpoint",
		"1 when the device knows where to send to a member, else 0.", []string{"peer"}, nil)
	pathDesc = prometheus.NewDesc("wgmesh_peer_path",
		"1 for a member's current path: direct, relayed (with the relay in via), idle (out of the device until traffic) or none.", []string{"peer", "path", "via"}, nil)
	pathChangedDesc = prometheus.NewDesc("wgmesh_peer_path_changed_timestamp_seconds",
		"Unix time of the last change of a member's path.", []string{"peer"}, nil)
	endpointSourceDesc = prometheus.NewDesc("wgmesh_peer_endpoint_source",
		"1 for where a member's endpoint came from: book, dns, registry, roaming or config.", []string{"peer", "source"}, nil)
	droppedDesc = prometheus.NewDesc("wgmesh_peer_dropped_total",
		"Packets from a member that the access rules dropped, by reason: no-rule (no rule allows the flow and this node did not start it) or fragment.", []string{"peer", "reason"}, nil)
	droppedOtherDesc = prometheus.NewDesc("wgmesh_dropped_not_member_total",
		"Packets from the mesh that the access rules dropped and that came from no member, by reason: not-a-member (source address of no member) or malformed.", []string{"reason"}, nil)
	rulesDesc = prometheus.NewDesc("wgmesh_rules",
		"Access rules in force; 0 when the book has none and every member may open every flow.", nil, nil)
	serialDesc = prometheus.NewDesc("wgmesh_book_serial",
		"Serial of the peer book in force.", nil, nil)
	membersDesc = prometheus.NewDesc("wgmesh_book_members",
		"Members in the peer book in force, this node included.", nil, nil)
	// Netstack mode only: the userspace TCP's loss repairs (in TUN mode the
	// kernel counts its own).
	tcpRetransmitsDesc = prometheus.NewDesc("wgmesh_netstack_tcp_retransmits_total",
		"TCP segments the userspace stack sent again (netstack mode).", nil, nil)
	tcpRecoveriesDesc = prometheus.NewDesc("wgmesh_netstack_tcp_recoveries_total",
		"Times a TCP connection of the userspace stack entered loss recovery, cutting its congestion window (netstack mode).", nil, nil)
	tcpTimeoutsDesc = prometheus.NewDesc("wgmesh_netstack_tcp_timeouts_total",
		"TCP retransmission timeouts in the userspace stack (netstack mode).", nil, nil)
	tcpSpuriousProbesDesc = prometheus.NewDesc("wgmesh_netstack_tcp_spurious_probes_total",
		"TCP tail loss probes shown to have duplicated data that had arrived, so no window was cut (netstack mode).", nil, nil)
)

// New returns metrics for src. The node counts as ready once SetReady(true)
// is called.
func New(src Source) *Metrics {
	m := &Metrics{src: src, reg: prometheus.NewRegistry(), now: time.Now}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wgmesh_book_reloads_total",
		Help: "Peer book reloads by result: applied, or rejected (invalid, unsigned, stale, or not applicable live).",
	}, []string{"result"})
	// Both series exist from the start, so a rate() over them works
	// before the first reload.
	m.reloads.WithLabelValues("applied")
	m.reloads.WithLabelValues("rejected")
	m.reg.MustRegister(m.reloads, (*collector)(m))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready: starting (book not applied, device not up) or shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	m.handlers = mux
	return m
}

// Handler serves /metrics, /healthz (the process is alive) and /readyz
// (the book is applied and the device is up).
func (m *Metrics) Handler() http.Handler { return m.handlers }

// SetReady marks the node ready or not: true once the book is applied and
// the device is up, false again when shutting down begins, so that
// /readyz answers 503 while the node stops.
func (m *Metrics) SetReady(ready bool) { m.ready.Store(ready) }

// Reloaded counts one book reload by its outcome.
func (m *Metrics) Reloaded(applied bool) {
	if applied {
		m.reloads.WithLabelValues("applied").Inc()
	} else {
		m.reloads.WithLabelValues("rejected").Inc()
	}
}

// collector turns a Status into metrics at scrape time.
type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{rxDesc, txDesc, handshakeAgeDesc, handshakeTimeDesc, endpointChangesDesc, peerUpDesc, pathDesc, pathChangedDesc, endpointSourceDesc, droppedDesc, droppedOtherDesc, rulesDesc, serialDesc, membersDesc, tcpRetransmitsDesc, tcpRecoveriesDesc, tcpTimeoutsDesc, tcpSpuriousProbesDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	now := c.now()
	ch <- prometheus.MustNewConstMetric(serialDesc, prometheus.GaugeValue, float64(st.BookSerial))
	ch <- prometheus.MustNewConstMetric(rulesDesc, prometheus.GaugeValue, float64(st.Rules))
	if tcp := st.TCP; tcp != nil {
		ch <- prometheus.MustNewConstMetric(tcpRetransmitsDesc, prometheus.CounterValue, float64(tcp.Retransmits))
		ch <- prometheus.MustNewConstMetric(tcpRecoveriesDesc, prometheus.CounterValue, float64(tcp.Recoveries))
		ch <- prometheus.MustNewConstMetric(tcpTimeoutsDesc, prometheus.CounterValue, float64(tcp.Timeouts))
		ch <- prometheus.MustNewConstMetric(tcpSpuriousProbesDesc, prometheus.CounterValue, float64(tcp.SpuriousProbes))
	}
	for _, r := range []string{"not-a-member", "malformed"} {
		ch <- prometheus.MustNewConstMetric(droppedOtherDesc, prometheus.CounterValue, float64(st.Dropped[r]), r)
	}
	members := 1
	for _, p := range st.Peers {
		if p.NotInBook {
			continue // no name to label it with; `wgmesh status` lists it
		}
		members++
		ch <- prometheus.MustNewConstMetric(rxDesc, prometheus.CounterValue, float64(p.RxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(txDesc, prometheus.CounterValue, float64(p.TxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(endpointChangesDesc, prometheus.CounterValue, float64(p.EndpointChanges), p.Name)
		// Both series exist from the start, so a rate() over them works
		// before the first drop.
		for _, r := range []string{"no-rule", "fragment"} {
			ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(p.DroppedBy[r]), p.Name, r)
		}
		hasEndpoint := 0.0
		if p.Endpoint != "" {
			hasEndpoint = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, hasEndpoint, p.Name)
		var ts float64
		if !p.LastHandshake.IsZero() {
			ts = float64(p.LastHandshake.UnixNano()) / 1e9
			ch <- prometheus.MustNewConstMetric(handshakeAgeDesc, prometheus.GaugeValue, now.Sub(p.LastHandshake).Seconds(), p.Name)
		}
		ch <- prometheus.MustNewConstMetric(handshakeTimeDesc, prometheus.GaugeValue, ts, p.Name)
		path, via := "none", ""
		switch {
		case p.Path == node.PathDirect:
			path = "direct"
		case p.Path == node.PathIdle:
			path = "idle"
		case strings.HasPrefix(p.Path, node.PathRelayPrefix):
			path, via = "relayed", strings.TrimPrefix(p.Path, node.PathRelayPrefix)
		}
		ch <- prometheus.MustNewConstMetric(pathDesc, prometheus.GaugeValue, 1, p.Name, path, via)
		if !p.PathSince.IsZero() {
			ch <- prometheus.MustNewConstMetric(pathChangedDesc, prometheus.GaugeValue, float64(p.PathSince.UnixNano())/1e9, p.Name)
		}
		if p.EndpointSource != "" {
			ch <- prometheus.MustNewConstMetric(endpointSourceDesc, prometheus.GaugeValue, 1, p.Name, p.EndpointSource)
		}
	}
	ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(members))
}
