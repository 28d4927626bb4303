package etcdbook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wgmesh/wgmesh/booksign"
	"github.com/wgmesh/wgmesh/internal/fileutil"
	"github.com/wgmesh/wgmesh/peerbook"
)

// Options say how to reach etcd.
type Options struct {
	// CAFile is a PEM bundle of the CAs that sign the etcd servers'
	// certificates. Setting it (or CertFile) makes the connection TLS;
	// without either it is plain http.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for
	// servers that authenticate clients by certificate. Both or neither.
	CertFile, KeyFile string
	// AuthFile holds one "user:password" line (mode 0600) for etcd's own
	// authentication.
	AuthFile string
	// AllowHTTP permits plain http to an endpoint that is not loopback:
	// anyone on the path could then read and change the book.
	AllowHTTP bool
	// DialTimeout bounds connecting to etcd. 0: 5 s.
	DialTimeout time.Duration
	// RequestTimeout bounds each request. 0: 10 s.
	RequestTimeout time.Duration
}

// Limits of the files named in Options.
const (
	maxAuthFile = 4 << 10
	maxPEMFile  = 4 << 20
)

// ErrNoBook is returned by Load's users when no book is stored under the
// prefix.
var ErrNoBook = errors.New("no book stored")

// ErrExists is returned by Push when a book is stored already and force
// is not set.
var ErrExists = errors.New("a book is stored already")

// ErrSigned is returned by Update without a signer for a signed book.
var ErrSigned = errors.New("the book is signed")

// Store is a connection to the book at one address.
type Store struct {
	cli     *clientv3.Client
	t       Target
	timeout time.Duration
}

// Connect makes a client for the book at t. It does not wait for etcd:
// requests fail (or a watch waits) until a member answers.
func Connect(t Target, o Options) (*Store, error) {
	cfg := clientv3.Config{
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		AutoSyncInterval:     0,
		Logger:               zap.NewNop(),
		// The client retries a request on another member itself; it
		// must not hang on one that is gone.
		PermitWithoutStream: true,
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	scheme := "http://"
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		scheme = "https://"
		tc, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	} else if !o.AllowHTTP {
		for _, ep := range t.Endpoints {
			if !isLoopback(ep) {
				return nil, fmt.Errorf("etcd endpoint %s: plain http lets anyone on the path read and change the book; give a CA for TLS, or allow plain http explicitly (on a trusted network)", ep)
			}
		}
	}
	for _, ep := range t.Endpoints {
		cfg.Endpoints = append(cfg.Endpoints, scheme+ep)
	}
	if o.AuthFile != "" {
		user, pass, err := readAuthFile(o.AuthFile)
		if err != nil {
			return nil, err
		}
		cfg.Username, cfg.Password = user, pass
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", t, err)
	}
	s := &Store{cli: cli, t: t, timeout: o.RequestTimeout}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	return s, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := fileutil.ReadFileLimit(o.CAFile, maxPEMFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate in the file", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("an etcd client certificate needs both the certificate and its key")
	}
	if o.CertFile != "" {
		cert, err := fileutil.ReadFileLimit(o.CertFile, maxPEMFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		key, err := fileutil.ReadPrivateFile(o.KeyFile, maxPEMFile, "etcd client key", func(perm fs.FileMode) error {
			return fmt.Errorf("etcd client key %s is readable by others (mode %04o); chmod 600 it", o.KeyFile, perm)
		})
		if err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %s and key %s: %w", o.CertFile, o.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// readAuthFile reads a "user:password" line from a file only its owner
// can read.
func readAuthFile(path string) (user, pass string, err error) {
	data, err := fileutil.ReadPrivateFile(path, maxAuthFile, "etcd auth file", func(perm fs.FileMode) error {
		return fmt.Errorf("etcd auth file %s is readable by others (mode %04o); chmod 600 it", path, perm)
	})
	if err != nil {
		return "", "", err
	}
	line, _, _ := strings.Cut(strings.TrimPrefix(string(data), "\ufeff"), "\n")
	line = strings.TrimSuffix(line, "\r")
	user, pass, ok := strings.Cut(line, ":")
	if !ok || user == "" || pass == "" {
		// Not the line: it is a secret.
		return "", "", fmt.Errorf("%s:1: want one line user:password", path)
	}
	return user, pass, nil
}

// Close ends the connection.
func (s *Store) Close() error { return s.cli.Close() }

// Client is the etcd client, for watches and leases.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Target is the book's address.
func (s *Store) Target() Target { return s.t }

// Snapshot is the book as stored at one revision.
type Snapshot struct {
	// Rev is the etcd revision read.
	Rev int64
	// Head and HeadSig are the head record and its signature; nil when
	// absent.
	Head, HeadSig []byte
	// HeadRev is the head's mod revision; 0 when there is none.
	HeadRev int64
	Records Records
	// ModRevs are the records' mod revisions.
	ModRevs map[string]int64
}

// Load reads the book's records, all at one revision.
func (s *Store) Load(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	p := s.t.Prefix
	var resp *clientv3.TxnResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(
			clientv3.OpGet(p+HeadKey),
			clientv3.OpGet(p+HeadSigKey),
			clientv3.OpGet(p+MeshKey),
			clientv3.OpGet(p+RulesKey),
			clientv3.OpGet(p+MembersDir, clientv3.WithPrefix()),
		).Commit()
		return err
	})
	if err != nil {
		return nil, s.requestError("reading the book", err)
	}
	snap := &Snapshot{Rev: resp.Header.Revision, Records: Records{}, ModRevs: map[string]int64{}}
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			rel := strings.TrimPrefix(string(kv.Key), p)
			switch i {
			case 0:
				snap.Head, snap.HeadRev = kv.Value, kv.ModRevision
			case 1:
				snap.HeadSig = kv.Value
			default:
				if IsRecord(rel) {
					snap.Records[rel] = kv.Value
					snap.ModRevs[rel] = kv.ModRevision
				}
			}
		}
	}
	return snap, nil
}

// retry runs a request that may be repeated safely until it succeeds,
// fails for a reason that will not go away, or ctx is done: an election
// (a leader killed or cut off) makes etcd refuse requests for a moment,
// which users of a Store must not see.
func (s *Store) retry(ctx context.Context, req func(context.Context) error) error {
	backoff := 20 * time.Millisecond
	for {
		err := req(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, time.Second)
	}
}

// transient reports whether err is etcd being unavailable for a moment: no
// leader, the leader changed, a member down.
func transient(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// requestError names the book and says what may be wrong.
func (s *Store) requestError(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: no etcd member answered within %v", what, s.t, s.timeout)
	}
	return fmt.Errorf("%s %s: %w", what, s.t, err)
}

// Book checks a snapshot and returns its book. With signers, the head
// must carry a valid signature by one of them; signer names its
// principals.
func (snap *Snapshot) Book(shown string, signers *booksign.AllowedSigners) (book *peerbook.Book, signer string, err error) {
	if snap.Head == nil {
		return nil, "", fmt.Errorf("%s: %w; store one with: wgmesh book push FILE %s", shown, ErrNoBook, shown)
	}
	if signers != nil {
		signer, err = signers.Verify(snap.Head, snap.HeadSig)
		if errors.Is(err, booksign.ErrNoSignature) {
			return nil, "", fmt.Errorf("%s/%s: %w: the book is not signed; change it with --sign-key", shown, HeadSigKey, err)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s/%s: %w", shown, HeadSigKey, err)
		}
	}
	head, err := ParseHead(snap.Head)
	if err != nil {
		return nil, "", fmt.Errorf("%s/%s: %w", shown, HeadKey, err)
	}
	book, _, err = Assemble(shown, head, snap.Records)
	return book, signer, err
}

// write is one version to store over snap: the new records, head and
// signature.
type write struct {
	recs Records
	head []byte
	sig  []byte // nil: no signature (any old one is deleted)
	// extraCmps and extraOps join the transaction that writes the head
	// (an invitation consumed with the member it adds).
	extraCmps []clientv3.Cmp
	extraOps  []clientv3.Op
}

func newWrite(b *peerbook.Book, signer ssh.Signer) (write, error) {
	w := write{recs: FromBook(b)}
	w.head = Head{Serial: b.Serial, Digest: w.recs.Digest()}.Marshal()
	if signer != nil {
		sig, err := booksign.Sign(signer, w.head)
		if err != nil {
			return w, err
		}
		w.sig = sig
	}
	return w, nil
}

// maxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops).
const maxTxnOps = 128

// errConflict says that another writer changed the book first.
var errConflict = errors.New("the book changed meanwhile")

// commit stores w over snap: one transaction that writes the records that
// changed, deletes those gone and writes the head, if the head and each of
// those records are still as snap read them. A book too large for one
// transaction is written in several, the head last, each with the same
// comparisons: nodes refuse the records in between until the head
// matches them.
func (s *Store) commit(ctx context.Context, snap *Snapshot, w write) error {
	p := s.t.Prefix
	var ops []clientv3.Op
	var cmps []clientv3.Cmp
	for k, v := range w.recs {
		if old, ok := snap.Records[k]; ok && string(old) == string(v) {
			continue
		}
		ops = append(ops, clientv3.OpPut(p+k, string(v)))
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p+k), "=", snap.ModRevs[k]))
	}
	for k := range snap.Records {
		if _, ok := w.recs[k]; !ok {
			ops = append(ops, clientv3.OpDelete(p+k))
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p+k), "=", snap.ModRevs[k]))
		}
	}
	headCmp := clientv3.Compare(clientv3.ModRevision(p+HeadKey), "=", snap.HeadRev)
	last := append([]clientv3.Op{clientv3.OpPut(p+HeadKey, string(w.head))}, w.extraOps...)
	headCmps := append([]clientv3.Cmp{headCmp}, w.extraCmps...)
	if w.sig != nil {
		last = append(last, clientv3.OpPut(p+HeadSigKey, string(w.sig)))
	} else if snap.HeadSig != nil {
		last = append(last, clientv3.OpDelete(p+HeadSigKey))
	}
	// Room for the head's comparison and puts in each transaction.
	chunk := (maxTxnOps - len(headCmps) - len(last)) / 2
	for len(ops) > chunk {
		if err := s.txn(ctx, append(cmps[:chunk:chunk], headCmps...), ops[:chunk]); err != nil {
			return err
		}
		ops, cmps = ops[chunk:], cmps[chunk:]
	}
	return s.txn(ctx, append(cmps, headCmps...), append(ops, last...))
}

func (s *Store) txn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return s.requestError("writing the book", err)
	}
	if !resp.Succeeded {
		return errConflict
	}
	return nil
}

// Push stores b. Without force it refuses to replace a book stored
// already (ErrExists); with force the stored book is replaced as a whole.
// With signer the head is signed.
func (s *Store) Push(ctx context.Context, b *peerbook.Book, signer ssh.Signer, force bool) error {
	if err := peerbook.Validate(b); err != nil {
		return err
	}
	w, err := newWrite(b, signer)
	if err != nil {
		return err
	}
	snap, err := s.Load(ctx)
	if err != nil {
		return err
	}
	if snap.Head != nil && !force {
		serial := "unreadable serial"
		if h, err := ParseHead(snap.Head); err == nil {
			serial = fmt.Sprintf("serial %d", h.Serial)
		}
		return fmt.Errorf("%s: %w (%s, %d members)", s.t, ErrExists, serial, countMembers(snap.Records))
	}
	err = s.commit(ctx, snap, w)
	if err != nil && transient(err) && ctx.Err() == nil {
		// The write may have landed before etcd failed to answer.
		if now, lerr := s.Load(ctx); lerr == nil && string(now.Head) == string(w.head) {
			return nil
		}
	}
	if errors.Is(err, errConflict) {
		return fmt.Errorf("%s: the book was changed by another writer during the push; nothing replaced, push again", s.t)
	} else if err != nil {
		return err
	}
	return nil
}

func countMembers(r Records) int {
	n := 0
	for k := range r {
		if strings.HasPrefix(k, MembersDir) {
			n++
		}
	}
	return n
}

// maxAttempts bounds how often Update starts over after another writer
// changed the book first.
const maxAttempts = 100

// Update applies change to the stored book in a transaction: it reads the
// book, calls change (a pure function, called again when another writer
// got in first) and writes what changed with the new head. A signed book
// needs signer (ErrSigned otherwise). It returns the book as written.
func (s *Store) Update(ctx context.Context, change func(*peerbook.Book) (*peerbook.Book, error), signer ssh.Signer) (*peerbook.Book, error) {
	return s.update(ctx, func(_ context.Context, b *peerbook.Book, _ *write) (*peerbook.Book, error) { return change(b) }, signer)
}

// update is Update whose change may also add to the transaction.
func (s *Store) update(ctx context.Context, change func(context.Context, *peerbook.Book, *write) (*peerbook.Book, error), signer ssh.Signer) (*peerbook.Book, error) {
	shown := s.t.String()
	for attempt := 1; ; attempt++ {
		snap, err := s.Load(ctx)
		if err != nil {
			return nil, err
		}
		ob, _, err := snap.Book(shown, nil)
		if err != nil {
			return nil, err
		}
		if snap.HeadSig != nil && signer == nil {
			return nil, fmt.Errorf("%s: %w (%s exists): an unsigned change would be refused by every node with trusted signers; give a signing key", shown, ErrSigned, HeadSigKey)
		}
		var extra write
		nb, err := change(ctx, ob, &extra)
		if err != nil {
			return nil, err
		}
		w, err := newWrite(nb, signer)
		if err != nil {
			return nil, err
		}
		w.extraCmps, w.extraOps = extra.extraCmps, extra.extraOps
		err = s.commit(ctx, snap, w)
		if err == nil {
			return nb, nil
		}
		if transient(err) && ctx.Err() == nil {
			// The write may have landed before etcd failed to answer:
			// then the head is ours, and the change is done.
			if now, lerr := s.Load(ctx); lerr == nil && string(now.Head) == string(w.head) {
				return nb, nil
			}
		} else if !errors.Is(err, errConflict) {
			return nil, err
		}
		if attempt == maxAttempts {
			return nil, fmt.Errorf("%s: %w %d times in a row; not changed, try again", shown, errConflict, attempt)
		}
		// Concurrent writers back off at random so one of them wins.
		d := time.Duration(rand.Int64N(int64(min(attempt, 10)) * int64(5*time.Millisecond)))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
