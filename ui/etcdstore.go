package ui

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/wgmesh/wgmesh/etcdbook"
	"github.com/wgmesh/wgmesh/internal/bookedit"
	"github.com/wgmesh/wgmesh/peerbook"
)

// EtcdStore is a book kept in etcd: every change runs in an etcd
// transaction (etcdbook.Store.Update, the code of `wgmesh book add` on an
// etcd:// book), again if another writer got in first. It is also the
// page's ViewSource: the views the nodes publish beside the book.
type EtcdStore struct {
	Etcd *etcdbook.Store
	// Signer, if not nil, signs every change (head.sig). nil: changes of a
	// signed book are refused, wrapping bookedit.ErrNeedsSigner.
	Signer ssh.Signer
}

// Load implements Store.
func (e *EtcdStore) Load(ctx context.Context) (*peerbook.Book, error) {
	snap, err := e.Etcd.Load(ctx)
	if err != nil {
		return nil, err
	}
	b, _, err := snap.Book(e.Etcd.Target().String(), nil)
	return b, err
}

// Update implements Store.
func (e *EtcdStore) Update(ctx context.Context, change func(*peerbook.Book) (*peerbook.Book, error)) (*peerbook.Book, error) {
	b, err := e.Etcd.Update(ctx, change, e.Signer)
	if errors.Is(err, etcdbook.ErrSigned) {
		return nil, fmt.Errorf("%w: %w", bookedit.ErrNeedsSigner, err)
	}
	return b, err
}

// Views implements ViewSource.
func (e *EtcdStore) Views(ctx context.Context) (map[string]etcdbook.View, error) {
	return e.Etcd.Views(ctx)
}
