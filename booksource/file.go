package booksource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// debounce is how long a file source waits after the last change in the
// book's directory before reading: an editor's save, or a book and its
// signature written one after the other, count as one change.
const debounce = 200 * time.Millisecond

// WatchFile reads the book at path (and path+".sig" when
// opts.TrustedSigners is set) and then follows it. A book that cannot be
// read or is refused at start is an error: there is nothing to run.
//
// Changes are found by watching the book's directory, so that editors that
// write a new file and rename it over the book, a signature written after
// the book, and Kubernetes-style "..data" symlink swaps all work; if path
// is a symlink, the directory of its target is watched as well. Each value
// received from reload (SIGHUP, typically; nil: none) forces a re-read.
//
// updates receives an Update for every new version: a new accepted book,
// or a refused version with Err set. A version identical to the last one
// seen is not sent again. The goroutine behind updates ends, and updates
// is closed, when ctx is done; the caller must keep receiving until then.
func WatchFile(ctx context.Context, path string, reload <-chan struct{}, opts Options) (first Update, updates <-chan Update, err error) {
	return watchFile(ctx, path, reload, opts, true)
}

// watchFile is WatchFile with the file watcher optional, so that tests can
// exercise the reload channel on its own.
func watchFile(ctx context.Context, path string, reload <-chan struct{}, opts Options, watch bool) (Update, <-chan Update, error) {
	path = filepath.Clean(path)
	g, err := newGate(path, path+SigSuffix, opts, false)
	if err != nil {
		return Update{}, nil, err
	}
	fw := &fileWatch{path: path, gate: g, log: g.log, relevant: map[string]bool{}}

	// Watch before the first read, so a change made in between is not lost.
	var w *fsnotify.Watcher
	if watch {
		if w, err = fw.watcher(); err != nil {
			return Update{}, nil, err
		}
	}
	first, _ := g.consider(fw.read())
	if first.Err != nil {
		if w != nil {
			w.Close()
		}
		return Update{}, nil, first.Err
	}
	ch := make(chan Update)
	go fw.run(ctx, w, reload, ch)
	return first, ch, nil
}

type fileWatch struct {
	path     string
	gate     *gate
	log      *slog.Logger
	relevant map[string]bool // cleaned paths whose events matter
	dirs     map[string]bool // watched directories
}

func (fw *fileWatch) watcher() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", fw.path, err)
	}
	fw.dirs = map[string]bool{}
	targets := []string{fw.path}
	if real, err := filepath.EvalSymlinks(fw.path); err == nil && real != fw.path {
		targets = append(targets, real)
	}
	for _, p := range targets {
		fw.relevant[p] = true
		fw.relevant[p+SigSuffix] = true
		dir := filepath.Dir(p)
		if fw.dirs[dir] {
			continue
		}
		if err := w.Add(dir); err != nil {
			w.Close()
			return nil, fmt.Errorf("watching the directory of %s: %w", fw.path, err)
		}
		fw.dirs[dir] = true
	}
	return w, nil
}

func (fw *fileWatch) isRelevant(name string) bool {
	name = filepath.Clean(name)
	if fw.relevant[name] {
		return true
	}
	// Kubernetes mounts ConfigMaps as symlinks through "..data", swapped
	// atomically; the book's own name sees no event then.
	return strings.HasPrefix(filepath.Base(name), "..") && filepath.Dir(name) == filepath.Dir(fw.path)
}

// read reads the book and, when signatures are required, its signature.
func (fw *fileWatch) read() version {
	book, err := fileutil.ReadFileLimit(fw.path, peerbook.MaxSize)
	if err != nil {
		return version{err: fmt.Errorf("reading book: %w", err)}
	}
	v := version{book: book}
	if fw.gate.signed() {
		sig, err := fileutil.ReadFileLimit(fw.path+SigSuffix, booksign.MaxSigSize)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Missing: check reports it as an unsigned book.
		case err != nil:
			return version{book: book, err: fmt.Errorf("reading signature: %w", err)}
		default:
			v.sig = sig
		}
	}
	return v
}

func (fw *fileWatch) run(ctx context.Context, w *fsnotify.Watcher, reload <-chan struct{}, ch chan<- Update) {
	defer close(ch)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()

	reread := func(why string) bool {
		u, news := fw.gate.consider(fw.read())
		if !news {
			fw.log.Debug("book unchanged", "file", fw.path, "trigger", why)
			return true
		}
		select {
		case ch <- u:
			return true
		case <-ctx.Done():
			return false
		}
	}

	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if fw.isRelevant(ev.Name) {
				timer.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				return
			}
			// Typically an event queue overflow: changes may have been
			// missed, so look again.
			fw.log.Warn("watching the book", "file", fw.path, "err", err)
			timer.Reset(debounce)
		case _, ok := <-reload:
			if !ok {
				reload = nil
				continue
			}
			if !reread("reload") {
				return
			}
		case <-timer.C:
			if !reread("file change") {
				return
			}
		}
	}
}
