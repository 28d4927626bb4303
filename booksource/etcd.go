package booksource

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/internal/netutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// CachedEtcdBook is the file in Options.StateDir that keeps the records of
// the last good book read from etcd.
const CachedEtcdBook = "etcd-book.json"

// Defaults of WatchEtcd.
const (
	DefaultEtcdStartTimeout = 5 * time.Second
	// A head whose records have not all arrived (a book written in
	// several transactions) is reported as refused only after this long.
	etcdSettle = time.Second
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// EtcdOptions tune WatchEtcd.
type EtcdOptions struct {
	// Store is the connection to the book. WatchEtcd does not close it:
	// close it once updates is closed.
	Store *etcdbook.Store
	// StartTimeout bounds the first read; after it, the cached book in
	// StateDir is used. 0: DefaultEtcdStartTimeout.
	StartTimeout time.Duration
	// Reload, if not nil, makes the book be read again for each value
	// received (SIGHUP, typically).
	Reload <-chan struct{}
	// CloseStore makes WatchEtcd close Store when it stops: when
	// updates is closed, or when WatchEtcd fails.
	CloseStore bool
}

// WatchEtcd reads the book stored in etcd, then watches its prefix and
// sends each new version, assembled from the records and checked as a
// whole (with trusted signers: the head's signature, the records against
// the head, and the serial rule, as for a signed file). A write of several
// records in one transaction arrives as one version.
//
// When etcd cannot be reached, or the watch breaks (a member lost its
// leader, say), the running book stays and WatchEtcd reconnects with
// exponential back-off, reading the book again before it watches anew.
// With opts.StateDir set every accepted version is cached there; when
// etcd cannot be used at start, first is the cached book with FromCache
// set.
//
// updates is closed when ctx is done; the caller must keep receiving until
// then.
func WatchEtcd(ctx context.Context, opts Options, eo EtcdOptions) (first Update, updates <-chan Update, err error) {
	if eo.Store == nil {
		return Update{}, nil, errors.New("booksource: WatchEtcd needs a Store")
	}
	shown := eo.Store.Target().String()
	g, err := newGate(shown, shown+"/"+etcdbook.HeadSigKey, opts, true)
	if err != nil {
		return Update{}, nil, err
	}
	w := &etcdWatch{gate: g, log: g.log, store: eo.Store, shown: shown, reload: eo.Reload}
	if eo.StartTimeout <= 0 {
		eo.StartTimeout = DefaultEtcdStartTimeout
	}
	first, err = w.start(ctx, eo.StartTimeout)
	if err != nil {
		if eo.CloseStore {
			eo.Store.Close()
		}
		return Update{}, nil, err
	}
	ch := make(chan Update)
	go func() {
		w.run(ctx, ch)
		if eo.CloseStore {
			eo.Store.Close()
		}
		close(ch)
	}()
	return first, ch, nil
}

type etcdWatch struct {
	gate   *gate
	log    *slog.Logger
	store  *etcdbook.Store
	shown  string
	reload <-chan struct{}

	snap *etcdbook.Snapshot // as last read and watched
}

// considerSnap checks the snapshot held and reports whether it is news.
func (w *etcdWatch) considerSnap() (Update, bool) {
	g, snap := w.gate, w.snap
	dh := snap.Records.Digest()
	h := sha256.New()
	for _, b := range [][]byte{snap.Head, snap.HeadSig, dh[:]} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var fp [sha256.Size]byte
	h.Sum(fp[:0])
	if g.seen && fp == g.seenHash {
		return Update{}, false
	}
	g.seen, g.seenHash = true, fp

	u := Update{Sig: snap.HeadSig}
	book, signer, err := snap.Book(w.shown, g.opts.TrustedSigners)
	if err != nil {
		u.Err = err
		return u, true
	}
	u.Raw = peerbook.Marshal(book)
	// The head names the serial and every record: its hash is the
	// version's identity.
	hh := sha256.Sum256(snap.Head)
	if g.signed() {
		if err := g.checkSerial(book, hh); err != nil {
			u.Err = err
			return u, true
		}
	}
	if g.current != nil && hh == g.currentHash {
		return Update{}, false
	}
	u.Book, u.Signer = book, signer
	g.accept(book, hh)
	w.saveCache()
	return u, true
}

// settling reports whether the held snapshot's records do not match its
// head yet: a write in several transactions is under way.
func (w *etcdWatch) settling() bool {
	h, err := etcdbook.ParseHead(w.snap.Head)
	return err == nil && h.Digest != w.snap.Records.Digest()
}

func (w *etcdWatch) start(ctx context.Context, timeout time.Duration) (Update, error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	snap, err := w.store.Load(lctx)
	cancel()
	if err == nil {
		w.snap = snap
		u, _ := w.considerSnap()
		if u.Err == nil {
			return u, nil
		}
		err = u.Err
	}
	if ctx.Err() != nil {
		return Update{}, ctx.Err()
	}
	reason := err
	dir := w.gate.opts.StateDir
	if dir == "" {
		return Update{}, fmt.Errorf("%w (no state dir, so no cached book to start from)", reason)
	}
	cached, err := readEtcdCache(dir)
	if errors.Is(err, os.ErrNotExist) {
		return Update{}, fmt.Errorf("%w (and no cached book in %s to start from)", reason, dir)
	}
	if err != nil {
		return Update{}, fmt.Errorf("%w (and the cached book is unusable: %v)", reason, err)
	}
	live := w.snap
	w.snap = cached
	cu, _ := w.considerSnap()
	if cu.Err != nil {
		return Update{}, fmt.Errorf("%w (and the cached book is refused: %v)", reason, cu.Err)
	}
	if live != nil {
		// etcd answered with a refused book: follow it from there, so
		// that its next version is seen.
		w.snap = live
	} else {
		w.snap.Rev = 0 // read everything again once etcd answers
	}
	cu.FromCache = true
	w.log.Warn("etcd unusable; starting from the cached book", "book", w.shown, "serial", cu.Book.Serial, "err", reason)
	return cu, nil
}

// run watches until ctx is done. Each break of the watch is followed by
// a fresh read after a back-off.
func (w *etcdWatch) run(ctx context.Context, ch chan<- Update) {
	send := func(u Update) bool {
		select {
		case ch <- u:
			return true
		case <-ctx.Done():
			return false
		}
	}
	backoff := minBackoff
	resync := w.snap.Rev == 0
	for ctx.Err() == nil {
		if resync {
			lctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
			snap, err := w.store.Load(lctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Warn("etcd unreachable; the running book stays, retrying", "book", w.shown, "in", backoff, "err", err)
				if !netutil.Sleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			w.snap = snap
			if u, news := w.considerSnap(); news && !send(u) {
				return
			}
			resync = false
		}
		err := w.watch(ctx, send, &backoff)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errReload) {
			resync = true
			continue
		}
		w.log.Warn("etcd watch broken; the running book stays, reading it again", "book", w.shown, "in", backoff, "err", err)
		if !netutil.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
		resync = true
	}
}

// errReload ends a watch to read the book again.
var errReload = errors.New("reload requested")

// watch follows the prefix from the held snapshot's revision until the
// watch breaks (its error) or ctx is done.
func (w *etcdWatch) watch(ctx context.Context, send func(Update) bool, backoff *time.Duration) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	prefix := w.store.Target().Prefix
	wch := w.store.Client().Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(w.snap.Rev+1))
	var settle <-chan time.Time
	var settleTimer *time.Timer
	defer func() {
		if settleTimer != nil {
			settleTimer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-w.reload:
			if !ok {
				w.reload = nil
				continue
			}
			return errReload
		case <-settle:
			settle = nil
			if u, news := w.considerSnap(); news && !send(u) {
				return ctx.Err()
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := resp.Err(); err != nil {
				return err
			}
			if resp.Canceled {
				return errors.New("watch canceled")
			}
			*backoff = minBackoff
			if !w.applyEvents(prefix, resp) {
				continue
			}
			if w.settling() {
				if settle == nil {
					settleTimer = time.NewTimer(etcdSettle)
					settle = settleTimer.C
				}
				continue
			}
			settle = nil
			if u, news := w.considerSnap(); news && !send(u) {
				return ctx.Err()
			}
		}
	}
}

// applyEvents updates the held snapshot; it reports whether a part of
// the book changed.
func (w *etcdWatch) applyEvents(prefix string, resp clientv3.WatchResponse) bool {
	changed := false
	s := w.snap
	for _, ev := range resp.Events {
		rel := strings.TrimPrefix(string(ev.Kv.Key), prefix)
		put := ev.Type == clientv3.EventTypePut
		switch {
		case rel == etcdbook.HeadKey:
			s.Head, s.HeadRev = nil, 0
			if put {
				s.Head, s.HeadRev = ev.Kv.Value, ev.Kv.ModRevision
			}
		case rel == etcdbook.HeadSigKey:
			s.HeadSig = nil
			if put {
				s.HeadSig = ev.Kv.Value
			}
		case etcdbook.IsRecord(rel):
			delete(s.Records, rel)
			delete(s.ModRevs, rel)
			if put {
				s.Records[rel], s.ModRevs[rel] = ev.Kv.Value, ev.Kv.ModRevision
			}
		default:
			continue
		}
		changed = true
	}
	if resp.Header.Revision > s.Rev {
		s.Rev = resp.Header.Revision
	}
	return changed
}

// etcdCache is the cached copy of the records.
type etcdCache struct {
	Head    string            `json:"head"`
	HeadSig string            `json:"head_sig,omitempty"`
	Records map[string]string `json:"records"`
}

func (w *etcdWatch) saveCache() {
	dir := w.gate.opts.StateDir
	if dir == "" {
		return
	}
	c := etcdCache{Head: string(w.snap.Head), HeadSig: string(w.snap.HeadSig), Records: map[string]string{}}
	for k, v := range w.snap.Records {
		c.Records[k] = string(v)
	}
	data, err := json.Marshal(c)
	if err == nil {
		err = writeFileAtomic(dir, CachedEtcdBook, data)
	}
	if err != nil {
		w.log.Warn("cannot cache the book; a restart while etcd is down will fail", "err", err)
	}
}

func readEtcdCache(dir string) (*etcdbook.Snapshot, error) {
	data, err := fileutil.ReadFileLimitNoFollow(filepath.Join(dir, CachedEtcdBook), 2*peerbook.MaxSize)
	if err != nil {
		return nil, err
	}
	var c etcdCache
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", CachedEtcdBook, err)
	}
	snap := &etcdbook.Snapshot{Head: []byte(c.Head), Records: etcdbook.Records{}, ModRevs: map[string]int64{}}
	if c.HeadSig != "" {
		snap.HeadSig = []byte(c.HeadSig)
	}
	for k, v := range c.Records {
		if !etcdbook.IsRecord(k) {
			return nil, fmt.Errorf("%s: %q is not a record of a book", CachedEtcdBook, k)
		}
		snap.Records[k] = []byte(v)
	}
	return snap, nil
}
