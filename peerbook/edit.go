package peerbook

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// EditText returns the text of book nb written as an edit of text, the file
// that holds book ob, so that a membership change keeps the file's comments
// and layout: the serial's value is replaced, removed members' [[peer]]
// tables are cut out (with the comment lines right above them), changed
// members' tables are rewritten in canonical form (comments above the header
// stay, comments inside the table are lost), new members are appended at
// the end, and every other byte stays. Where the file's shape does not allow
// such an edit (inline peer tables, a changed [mesh], members moved around)
// it returns Marshal(nb), which loses the file's comments, and inPlace
// false. Either way the result parses to nb.
func EditText(text []byte, ob, nb *Book) (out []byte, inPlace bool) {
	if out, ok := editText(text, ob, nb); ok {
		if got, err := Parse(nb.Source, out); err == nil && bytes.Equal(Marshal(got), Marshal(nb)) {
			return out, true
		}
	}
	return Marshal(nb), false
}

// section is the span of one [[peer]] table in the text.
type section struct {
	lead   int // start of the comment lines directly above the header
	header int // start of the header's line
	end    int // lead of the next header, or the end of the text
}

func editText(text []byte, ob, nb *Book) ([]byte, bool) {
	if !ob.Mesh.Equal(&nb.Mesh) || ob.Format != nb.Format || !RulesEqual(ob.Rules, nb.Rules) {
		return nil, false
	}
	lines := indexLines(text) // for line starts only
	var p unstable.Parser
	p.Reset(text)
	var (
		headers    []int // line starts of every table header
		peerHeader []bool
		serialAt   = unstable.Range{}
		haveSerial bool
		formatEnd  = -1
		inTop      = true
	)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTop = false
			it := e.Key()
			var parts []string
			off := -1
			for it.Next() {
				k := it.Node()
				if off < 0 {
					off = int(k.Raw.Offset)
				}
				parts = append(parts, string(k.Data))
			}
			key := strings.Join(parts, ".")
			if key != "peer" && strings.HasPrefix(key, "peer.") {
				return nil, false // a sub-table of a member: not ours to cut
			}
			headers = append(headers, lines.starts[lines.lineOfOffset(off)-1])
			peerHeader = append(peerHeader, e.Kind == unstable.ArrayTable && key == "peer")
		case unstable.KeyValue:
			if !inTop {
				continue
			}
			it := e.Key()
			it.Next()
			k := it.Node()
			if it.Next() {
				continue // a dotted key
			}
			switch string(k.Data) {
			case "serial":
				v := e.Value()
				if v.Kind != unstable.Integer {
					return nil, false
				}
				serialAt, haveSerial = v.Raw, true
			case "format":
				v := e.Value()
				formatEnd = int(v.Raw.Offset + v.Raw.Length)
			case "peer":
				return nil, false // peer = [ ... ] inline
			}
		}
	}
	if p.Error() != nil {
		return nil, false
	}
	// Sections: from a header's leading comments to the next one's.
	leads := make([]int, len(headers))
	for i, h := range headers {
		leads[i] = commentLead(text, h)
	}
	var secs []section
	for i, h := range headers {
		if !peerHeader[i] {
			continue
		}
		end := len(text)
		if i+1 < len(headers) {
			end = leads[i+1]
		}
		secs = append(secs, section{lead: leads[i], header: h, end: end})
	}
	if len(secs) != len(ob.Peers) {
		return nil, false
	}

	// Members keep their order; new ones come last.
	newByName := make(map[string]*Peer, len(nb.Peers))
	for i := range nb.Peers {
		newByName[strings.ToLower(nb.Peers[i].Name)] = &nb.Peers[i]
	}
	oldNames := make(map[string]bool, len(ob.Peers))
	var out bytes.Buffer
	pos := 0
	copyTo := func(n int) {
		if n > pos {
			out.Write(text[pos:n])
			pos = n
		}
	}
	// The serial sits before every header.
	serial := strconv.FormatUint(nb.Serial, 10)
	switch {
	case haveSerial:
		copyTo(int(serialAt.Offset))
		out.WriteString(serial)
		pos = int(serialAt.Offset + serialAt.Length)
	case formatEnd >= 0:
		copyTo(formatEnd)
		out.WriteString("\nserial = " + serial)
	default:
		return nil, false
	}
	kept := 0
	for i, s := range secs {
		op := &ob.Peers[i]
		oldNames[strings.ToLower(op.Name)] = true
		np, ok := newByName[strings.ToLower(op.Name)]
		switch {
		case !ok:
			copyTo(s.lead)
			pos = s.end
		case np.Equal(op):
			kept++
		default:
			copyTo(s.header)
			body := text[s.header:s.end]
			trail := len(body) - len(bytes.TrimRight(body, " \t\r\n"))
			out.Write(marshalPeer(np))
			// Keep the blank lines that separated the table from the next.
			if t := body[len(body)-trail:]; bytes.Count(t, []byte("\n")) > 1 {
				out.Write(t[bytes.IndexByte(t, '\n')+1:])
			}
			pos = s.end
			kept++
		}
	}
	copyTo(len(text))
	for i := range nb.Peers {
		np := &nb.Peers[i]
		if oldNames[strings.ToLower(np.Name)] {
			continue
		}
		if b := out.Bytes(); len(b) > 0 && b[len(b)-1] != '\n' {
			out.WriteByte('\n')
		}
		if b := out.Bytes(); len(b) > 1 && !bytes.HasSuffix(b, []byte("\n\n")) {
			out.WriteByte('\n')
		}
		out.Write(marshalPeer(np))
	}
	return out.Bytes(), true
}

// commentLead returns the start of the run of comment lines directly above
// the line starting at h (no blank line between), or h.
func commentLead(text []byte, h int) int {
	lead := h
	for lead > 0 {
		prevEnd := lead - 1 // the '\n' ending the previous line
		start := bytes.LastIndexByte(text[:prevEnd], '\n') + 1
		if !bytes.HasPrefix(bytes.TrimLeft(text[start:prevEnd], " \t"), []byte("#")) {
			break
		}
		lead = start
	}
	return lead
}

// marshalPeer is the canonical [[peer]] table of p, as Marshal writes it.
func marshalPeer(p *Peer) []byte {
	b := Marshal(&Book{Peers: []Peer{*p}})
	return b[bytes.Index(b, []byte("[[peer]]\n")):]
}
