package dnsserve

import (
	"context"
	"log/slog"
	"strings"

	"github.com/miekg/dns"

	"github.com/wgmesh/wgmesh/internal/netutil"
)

// EDNSSize is the largest UDP reply sent to EDNS clients and the size
// advertised back: the DNS flag day 2020 value, which avoids IP
// fragmentation.
const EDNSSize = 1232

// NewReply starts the reply to req and settles what every wgmesh name
// server answers alike: an EDNS version other than 0 (BADVERS), an opcode
// other than QUERY (NOTIMP), other than one question (FORMERR) and a class
// other than IN or ANY (REFUSED). When ok is false, m is the whole reply;
// otherwise q is the question to answer.
func NewReply(req *dns.Msg) (m *dns.Msg, q dns.Question, ok bool) {
	m = new(dns.Msg)
	m.SetReply(req)
	m.Compress = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(EDNSSize, false)
		if opt.Version() != 0 {
			m.MsgHdr.Rcode = dns.RcodeBadVers
			return m, q, false
		}
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m, q, false
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m, q, false
	}
	q = req.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m, q, false
	}
	return m, q, true
}

// Send writes the reply m to req. Over UDP it first cuts m to the
// client's buffer: 512 bytes, or the EDNS0 size it advertises up to
// EDNSSize; what does not fit is left out and the TC bit tells the client
// to ask again over TCP. Each query gets one debug line, "WHAT query".
func Send(w dns.ResponseWriter, req, m *dns.Msg, log *slog.Logger, what string) {
	size := dns.MinMsgSize
	if a := w.RemoteAddr(); a != nil && strings.HasPrefix(a.Network(), "tcp") {
		size = dns.MaxMsgSize
	} else if opt := req.IsEdns0(); opt != nil {
		size = int(max(min(opt.UDPSize(), EDNSSize), dns.MinMsgSize))
	}
	m.Truncate(size)
	client := netutil.AddrString(w.RemoteAddr())
	if log.Enabled(context.Background(), slog.LevelDebug) {
		q := "(none)"
		if len(req.Question) > 0 {
			q = req.Question[0].Name + " " + dns.TypeToString[req.Question[0].Qtype]
		}
		log.Debug(what+" query", "client", client, "question", q,
			"rcode", dns.RcodeToString[m.Rcode], "answers", len(m.Answer), "truncated", m.Truncated)
	}
	if err := w.WriteMsg(m); err != nil {
		log.Debug(what+" reply not sent", "client", client, "err", err)
	}
}
