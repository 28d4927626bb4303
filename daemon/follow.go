package daemon

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/booksource"
	"github.com/wgmesh/wgmesh/control"
	"github.com/wgmesh/wgmesh/node"
	"github.com/wgmesh/wgmesh/peerbook"
)

// follow applies every new version of the book until Close.
func (d *Daemon) follow(context.Context) error {
	d.rep = &reporter{n: d.n}
	ctx, cancel := context.WithCancel(d.run)
	stop := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		updates := d.updates
		for {
			select {
			case <-stop:
				return
			case u, ok := <-updates:
				if !ok {
					return // the source stopped: the daemon is closing
				}
				d.apply(ctx, u)
			}
		}
	}()
	d.push("follow", func() {
		cancel() // a reload resolving hostnames ends now
		close(stop)
		<-ended
	})
	return nil
}

// apply handles one new version of the book: a refused one is logged
// problem by problem and shown by status; a good one is applied as a
// difference.
func (d *Daemon) apply(ctx context.Context, u booksource.Update) {
	shown := d.src.String()
	if u.Err == nil {
		if err := d.n.Reload(ctx, u.Book); err != nil {
			u.Err = err
		}
	}
	m := d.svc.metrics
	if u.Err != nil {
		var perr *peerbook.Error
		if errors.As(u.Err, &perr) {
			for _, p := range perr.Problems {
				d.log.Error("book refused: "+p.String(), "book", shown)
			}
		} else {
			d.log.Error("book refused: "+u.Err.Error(), "book", shown)
		}
		d.log.Warn("the running peer book stays in force", "serial", d.n.Book().Serial)
		d.rep.reject(u.Err)
		if m != nil {
			m.Reloaded(false)
		}
		if d.cfg.OnReload != nil {
			d.cfg.OnReload(nil, u.Err)
		}
		return
	}
	d.rep.accept()
	if m != nil {
		m.Reloaded(true)
	}
	attrs := []any{"book", shown, "serial", u.Book.Serial, "members", len(u.Book.Peers)}
	if u.Signer != "" {
		attrs = append(attrs, "signer", u.Signer)
	}
	d.log.Info("book reloaded", attrs...)
	for _, s := range d.cfg.Forwards {
		if err := checkTarget(u.Book, s); err != nil {
			d.log.Warn(err.Error())
		}
	}
	if d.cfg.OnReload != nil {
		d.cfg.OnReload(u.Book, nil)
	}
}

// reporter is what the control socket serves: the node's status and the
// last refused book.
type reporter struct {
	n *node.Node

	mu  sync.Mutex
	rej *control.Rejection
}

func (r *reporter) Report() control.Report {
	rep := control.Report{Status: r.n.Status()}
	r.mu.Lock()
	if r.rej != nil {
		rej := *r.rej
		rep.LastRejection = &rej
	}
	r.mu.Unlock()
	return rep
}

func (r *reporter) reject(err error) {
	r.mu.Lock()
	r.rej = &control.Rejection{Time: time.Now().UTC(), Error: err.Error()}
	r.mu.Unlock()
}

func (r *reporter) accept() {
	r.mu.Lock()
	r.rej = nil
	r.mu.Unlock()
}

// serveControl serves the control socket that `wgmesh status` asks.
func (d *Daemon) serveControl(context.Context) error {
	if d.cfg.ControlPath == "" {
		return nil
	}
	ctl, err := control.ServeReport(d.run, d.cfg.ControlPath, d.rep)
	if err != nil {
		return &ConfigError{Field: "ControlPath", Err: err}
	}
	d.ctl = ctl
	d.push("control", func() { ctl.Close() })
	return nil
}

// setReady makes /readyz answer 200 and logs the ready line.
func (d *Daemon) setReady(context.Context) error {
	if m := d.svc.metrics; m != nil {
		m.SetReady(true)
		d.push("ready", func() { m.SetReady(false) })
	}
	st := d.n.Status()
	var attrs []any
	if d.cfg.Instance != "" {
		attrs = append(attrs, "instance", d.cfg.Instance)
	}
	attrs = append(attrs, "name", st.Name, "listen_port", st.ListenPort)
	if d.cfg.ControlPath != "" {
		attrs = append(attrs, "control", d.cfg.ControlPath)
	}
	attrs = append(attrs, "book", d.src.String(), "serial", d.first.Book.Serial)
	if d.first.Signer != "" {
		attrs = append(attrs, "signer", d.first.Signer)
	}
	if d.first.FromCache {
		attrs = append(attrs, "from_cache", true)
	}
	for _, r := range d.relays {
		attrs = append(attrs, strings.TrimPrefix(r.spec.Flag, "--"), r.String())
	}
	attrs = append(attrs, d.readyAttrs()...)
	d.log.Info("ready", attrs...)
	return nil
}
