// Package repo is the backup repository: content-addressed, deduplicated,
// compressed and encrypted chunks plus per-backup indexes, on any
// objstore.Backend. It knows nothing of volumes, services or HTTP.
package repo

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// DefaultChunkSize is the chunk size of new repositories.
const DefaultChunkSize = 4 << 20

// Options tune a Repository's use of the machine and the store. The zero
// value is usable.
type Options struct {
	// Workers is the number of goroutines that hash, compress and seal
	// (default GOMAXPROCS).
	Workers int
	// Transfers is the number of concurrent requests to the store
	// (default 4).
	Transfers int
	// Readers is the number of goroutines reading a backup's source
	// ahead of the workers (default 1: one forward stream; a block device
	// on a deep queue may want more).
	Readers int
	// ReadAhead is how many regions may wait, read, for a worker
	// (default 12): it lets slow regions (text to compress) and fast ones
	// (zeros, incompressible data) overlap with the reads.
	ReadAhead int
	// Nice, from 1 to 19, is the nice value of the threads that read a
	// backup's source and that hash, compress and seal or open and check
	// chunks (0, the default: as the process). A service sets it so that
	// backups and restores yield the CPU to the databases on the host.
	Nice int
	// Rand supplies nonces and keys (crypto/rand when nil).
	Rand io.Reader
	// Hostname is recorded in backups and key files (os.Hostname when "").
	Hostname string
	// KDF is the cost of new keys (crypto.DefaultKDF when zero).
	KDF crypto.KDFParams

	// Now reads the local clock (time.Now when nil). Every time the
	// repository measures or records for itself goes through it: when a
	// backup session or a sweep last refreshed its markers and whether it
	// may still act on them, when the next refresh is due, how long a sweep
	// waits for the consistency margin, the times written into manifests,
	// keys and the config, and the durations in stats. The ages the
	// garbage-collection rule compares across machines (markers, condemned
	// sets, sweeps) are read from the store's clock instead: see
	// docs/format.md, "Garbage collection".
	Now func() time.Time
	// Sleep returns once Now reads until or later, or with ctx's error when
	// ctx ends first. The default waits on a wall-clock timer for
	// until.Sub(Now()). The repository sleeps only in garbage collection:
	// for the consistency margins of a sweep, and between looks at a sweep
	// under way that a backup must wait for. It may be called from several
	// goroutines at once.
	Sleep func(ctx context.Context, until time.Time) error
	// Ticks starts the ticks of a periodic refresh, one every period, and
	// returns them with the function that stops them (a time.Ticker's when
	// nil). A backup session's heartbeat and a sweep's keep-alive each start
	// their ticks before the call that starts them returns, take them in one
	// goroutine, refresh at a tick only when the refresh is due by Now, and
	// call stop once, before that goroutine ends. As with a time.Ticker, a
	// tick that comes while the refresh runs may be dropped.
	Ticks func(period time.Duration) (ticks <-chan time.Time, stop func())
	// OnHeartbeat, when set, is called after every periodic refresh (of a
	// backup session's marker, or of a sweep's markers) with its result,
	// from the refreshing goroutine, which waits for it: it must return
	// soon, and be safe to call from several goroutines at once. Tests use
	// it to learn that a refresh they caused has been made.
	OnHeartbeat func(err error)
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Transfers <= 0 {
		o.Transfers = 4
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = 12
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.KDF == (crypto.KDFParams{}) {
		o.KDF = crypto.DefaultKDF
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = wallSleep(o.Now)
	}
	if o.Ticks == nil {
		o.Ticks = wallTicks
	}
	return o
}

// wallSleep sleeps on a wall-clock timer for the time now still lacks to
// until.
func wallSleep(now func() time.Time) func(ctx context.Context, until time.Time) error {
	return func(ctx context.Context, until time.Time) error {
		d := until.Sub(now())
		if d <= 0 {
			return ctx.Err()
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
}

func wallTicks(period time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(period)
	return t.C, t.Stop
}

// Secret is what unlocks a key: a password or a key file's contents.
type Secret struct {
	Kind  string // format.KeyKindPassword or format.KeyKindFile
	Bytes []byte
}

// Repository is an open, unlocked repository. It is safe for concurrent use.
// It owns its store: Close ends both.
type Repository struct {
	be     objstore.Backend
	cfg    *format.Config
	mk     *crypto.MasterKey
	keyID  cairn.ID
	codec  *format.Codec
	sealer *format.Sealer
	opts   Options
	// streamChunker is how stream backups are cut: StreamChunker(), or
	// smaller sizes in tests (export_test.go).
	streamChunker format.ChunkerParams

	// The goroutines an operation leaves running beside it (heartbeats,
	// keep-alives) are started through goBackground: Close stops them
	// (closing) and waits for them (background).
	bgMu       sync.Mutex
	closed     bool
	closing    chan struct{}
	background sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

// errClosed is what an operation that needs the repository's background
// work gets once Close has been called.
var errClosed = fmt.Errorf("the repository is closed: %w", cairn.ErrInvalid)

// Close stops what the repository runs in the background (the heartbeats
// of backup sessions, the keep-alives of sweeps), waits for it to end, and
// closes the store if the backend has a Close method. It does not wait for
// operations in flight: call it after they have returned. One that is still
// running fails (its store is closed; a backup refuses to commit once its
// session has stopped). Close is idempotent: later calls return the first
// call's result.
func (r *Repository) Close() error {
	r.closeOnce.Do(func() {
		r.bgMu.Lock()
		r.closed = true
		close(r.closing)
		r.bgMu.Unlock()
		r.background.Wait()
		if err := r.be.Close(); err != nil {
			r.closeErr = fmt.Errorf("closing %s: %w", r.be.Location(), err)
		}
	})
	return r.closeErr
}

// goBackground runs fn in a goroutine Close waits for; fn must return soon
// after closing is closed. It fails once Close has been called.
func (r *Repository) goBackground(fn func()) error {
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.closed {
		return errClosed
	}
	r.background.Go(fn)
	return nil
}

// now reads the repository's clock (Options.Now).
func (r *Repository) now() time.Time { return r.opts.Now() }

// pause sleeps for d on the repository's clock (Options.Sleep).
func (r *Repository) pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return r.opts.Sleep(ctx, r.now().Add(d))
}

// InitOptions describe a new repository.
type InitOptions struct {
	ChunkSize   int64
	Compression format.Level
	GC          format.GCParams
}

// DefaultGC are the garbage-collection parameters of a new repository.
var DefaultGC = format.GCParams{
	ConsistencyMargin: 0,
	SessionTimeout:    format.Duration(15 * time.Minute),
}

// Init creates a repository in an empty store, protected by secret. The
// repository it returns owns be: its Close closes be. On error, be stays
// the caller's.
func Init(ctx context.Context, be objstore.Backend, secret Secret, iopts InitOptions, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	if iopts.ChunkSize == 0 {
		iopts.ChunkSize = DefaultChunkSize
	}
	if err := format.ValidateChunkSize(iopts.ChunkSize); err != nil {
		return nil, err
	}
	if iopts.GC == (format.GCParams{}) {
		iopts.GC = DefaultGC
	}
	if iopts.GC.SessionTimeout < format.Duration(3*time.Second) || iopts.GC.ConsistencyMargin < 0 {
		return nil, fmt.Errorf("gc parameters %+v: %w", iopts.GC, cairn.ErrInvalid)
	}
	if ok, err := objstore.Exists(ctx, be, format.ConfigName); err != nil {
		return nil, fmt.Errorf("init %s: %w", be.Location(), err)
	} else if ok {
		return nil, fmt.Errorf("init %s: a repository exists there: %w", be.Location(), cairn.ErrExists)
	}
	mk, err := crypto.NewMasterKey(opts.Rand)
	if err != nil {
		return nil, err
	}
	cfg := &format.Config{
		Format:      format.ConfigFormat,
		Version:     format.Version,
		ID:          cairn.NewID(),
		Created:     opts.Now().UTC(),
		ChunkSize:   iopts.ChunkSize,
		Compression: iopts.Compression,
		GC:          iopts.GC,
	}
	r := newRepository(be, cfg, mk, opts)
	// The key goes first: a config without a key would be a locked-out
	// repository. Two concurrent inits both write a key, but only one
	// config wins; the loser removes its key.
	keyID, err := r.addKey(ctx, secret)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", be.Location(), err)
	}
	cfg.InitialKey = keyID
	cfg.SetMAC(mk)
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := be.Put(ctx, format.ConfigName, data, objstore.PutOptions{IfAbsent: true}); err != nil {
		_ = be.Delete(context.WithoutCancel(ctx), keyName(keyID))
		if errors.Is(err, cairn.ErrExists) {
			return nil, fmt.Errorf("init %s: another process created a repository there: %w", be.Location(), cairn.ErrExists)
		}
		return nil, fmt.Errorf("init %s: %w", be.Location(), err)
	}
	r.keyID = keyID
	return r, nil
}

func newRepository(be objstore.Backend, cfg *format.Config, mk *crypto.MasterKey, opts Options) *Repository {
	codec := format.NewCodec()
	return &Repository{
		be:            be,
		cfg:           cfg,
		mk:            mk,
		codec:         codec,
		sealer:        format.NewSealer(mk, codec, opts.Rand),
		opts:          opts,
		streamChunker: StreamChunker(),
		closing:       make(chan struct{}),
	}
}

// ReadConfig reads a repository's plaintext config without unlocking it.
func ReadConfig(ctx context.Context, be objstore.Backend) (*format.Config, error) {
	data, err := objstore.ReadAll(ctx, be, format.ConfigName, 0, -1)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil, fmt.Errorf("%s: no config: %w", be.Location(), cairn.ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return format.DecodeConfig(data)
}

// Open unlocks the repository in be with secret. The repository it returns
// owns be: its Close closes be. On error, be stays the caller's.
func Open(ctx context.Context, be objstore.Backend, secret Secret, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	cfg, err := ReadConfig(ctx, be)
	if err != nil {
		return nil, err
	}
	keys, damaged, err := loadKeyFiles(ctx, be, cfg.InitialKey)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if damaged > 0 {
			return nil, fmt.Errorf("%s: all %d key files are unreadable: %w", be.Location(), damaged, cairn.ErrCorrupt)
		}
		return nil, fmt.Errorf("%s: the repository has no keys (an interrupted init?): %w", be.Location(), cairn.ErrCorrupt)
	}
	// Try keys made from the same kind of secret first; every key is tried
	// in the end, since a key file can be given as a password and back.
	slices.SortStableFunc(keys, func(a, b *format.KeyFile) int {
		return cmp.Compare(boolInt(a.Kind != secret.Kind), boolInt(b.Kind != secret.Kind))
	})
	for _, k := range keys {
		kek, err := crypto.DeriveKEK(secret.Bytes, k.KDF.Salt, k.KDF.KDFParams)
		if err != nil {
			continue
		}
		mk, err := crypto.UnwrapKey(kek, k.MasterKey, format.KeyAAD(cfg.ID, k.ID))
		if err != nil {
			continue
		}
		if err := cfg.VerifyMAC(mk); err != nil {
			return nil, fmt.Errorf("%s: %w", be.Location(), err)
		}
		r := newRepository(be, cfg, mk, opts)
		r.keyID = k.ID
		return r, nil
	}
	return nil, fmt.Errorf("%s: %w", be.Location(), cairn.ErrWrongKey)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Config returns the repository's configuration.
func (r *Repository) Config() format.Config { return *r.cfg }

// Backend returns the store the repository lives in.
func (r *Repository) Backend() objstore.Backend { return r.be }

// KeyID returns the ID of the key the repository was opened with.
func (r *Repository) KeyID() cairn.ID { return r.keyID }

func keyName(id cairn.ID) string { return format.KeysPrefix + id.String() }

// loadKeyFiles reads every key file; damaged counts those that could not be
// decoded.
func loadKeyFiles(ctx context.Context, be objstore.Backend, initial cairn.ID) (keys []*format.KeyFile, damaged int, err error) {
	var names []string
	listed := map[string]bool{}
	err = be.List(ctx, format.KeysPrefix, func(info objstore.ObjectInfo) error {
		names = append(names, info.Name)
		listed[info.Name] = true
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing keys: %w", err)
	}
	// A listing may lag the init that wrote the first key: ask for it by
	// name too (it is skipped below if it was removed since).
	if !initial.IsZero() && !listed[keyName(initial)] {
		names = append(names, keyName(initial))
	}
	for _, name := range names {
		data, err := objstore.ReadAll(ctx, be, name, 0, -1)
		if errors.Is(err, cairn.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading key %s: %w", name, err)
		}
		k, err := format.DecodeKeyFile(data)
		if err != nil || keyName(k.ID) != name {
			// One damaged key must not lock out the others.
			damaged++
			continue
		}
		keys = append(keys, k)
	}
	return keys, damaged, nil
}

// KeyInfo describes a key for listing.
type KeyInfo struct {
	ID       cairn.ID  `json:"id"`
	Kind     string    `json:"kind"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	Username string    `json:"username,omitempty"`
	Current  bool      `json:"current"`
}

// Keys lists the repository's keys.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	keys, _, err := loadKeyFiles(ctx, r.be, r.cfg.InitialKey)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(keys))
	for _, k := range keys {
		out = append(out, KeyInfo{ID: k.ID, Kind: k.Kind, Created: k.Created, Hostname: k.Hostname, Username: k.Username, Current: k.ID == r.keyID})
	}
	slices.SortFunc(out, func(a, b KeyInfo) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// AddKey adds a key that unlocks the repository with secret.
func (r *Repository) AddKey(ctx context.Context, secret Secret) (cairn.ID, error) {
	return r.addKey(ctx, secret)
}

func (r *Repository) addKey(ctx context.Context, secret Secret) (cairn.ID, error) {
	if len(secret.Bytes) == 0 {
		return cairn.ID{}, fmt.Errorf("empty password or key file: %w", cairn.ErrInvalid)
	}
	if secret.Kind != format.KeyKindPassword && secret.Kind != format.KeyKindFile {
		return cairn.ID{}, fmt.Errorf("key kind %q: %w", secret.Kind, cairn.ErrInvalid)
	}
	salt := make([]byte, 16)
	if _, err := io.ReadFull(r.opts.Rand, salt); err != nil {
		return cairn.ID{}, fmt.Errorf("salt: %w", err)
	}
	kek, err := crypto.DeriveKEK(secret.Bytes, salt, r.opts.KDF)
	if err != nil {
		return cairn.ID{}, err
	}
	id := cairn.NewID()
	wrapped, err := crypto.WrapKey(kek, r.mk, format.KeyAAD(r.cfg.ID, id), r.opts.Rand)
	if err != nil {
		return cairn.ID{}, err
	}
	kf := format.KeyFile{
		Version:   1,
		ID:        id,
		Kind:      secret.Kind,
		Created:   r.now().UTC(),
		Hostname:  r.opts.Hostname,
		KDF:       format.KDF{Algorithm: "argon2id", KDFParams: r.opts.KDF, Salt: salt},
		MasterKey: wrapped,
	}
	if u, err := user.Current(); err == nil {
		kf.Username = u.Username
	}
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return cairn.ID{}, err
	}
	if err := r.be.Put(ctx, keyName(id), data, objstore.PutOptions{}); err != nil {
		return cairn.ID{}, fmt.Errorf("writing key: %w", err)
	}
	return id, nil
}

// ResolveKey finds a key by ID or unique ID prefix.
func (r *Repository) ResolveKey(ctx context.Context, prefix string) (cairn.ID, error) {
	keys, err := r.Keys(ctx)
	if err != nil {
		return cairn.ID{}, err
	}
	ids := make([]cairn.ID, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return resolvePrefix("key", prefix, ids)
}

// RemoveKey deletes a key. The last key and the key in use are refused:
// removing them could lock everyone out.
func (r *Repository) RemoveKey(ctx context.Context, id cairn.ID) error {
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	found := false
	for _, k := range keys {
		found = found || k.ID == id
	}
	if !found {
		return fmt.Errorf("key %s: %w", id.Short(), cairn.ErrNotFound)
	}
	if len(keys) == 1 {
		return fmt.Errorf("key %s is the repository's last key; add another first: %w", id.Short(), cairn.ErrConflict)
	}
	if id == r.keyID {
		return fmt.Errorf("key %s is the key in use; open the repository with another key to remove it: %w", id.Short(), cairn.ErrConflict)
	}
	if err := r.be.Delete(ctx, keyName(id)); err != nil {
		return fmt.Errorf("removing key: %w", err)
	}
	return nil
}

// ChangeSecret replaces the key in use with one for secret and returns the
// new key's ID. The new key is written before the old one is removed.
func (r *Repository) ChangeSecret(ctx context.Context, secret Secret) (cairn.ID, error) {
	id, err := r.addKey(ctx, secret)
	if err != nil {
		return cairn.ID{}, err
	}
	old := r.keyID
	r.keyID = id
	if err := r.be.Delete(ctx, keyName(old)); err != nil {
		return id, fmt.Errorf("new key %s added, removing the old key %s: %w", id.Short(), old.Short(), err)
	}
	return id, nil
}

func resolvePrefix(what, prefix string, ids []cairn.ID) (cairn.ID, error) {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if prefix == "" {
		return cairn.ID{}, fmt.Errorf("empty %s id: %w", what, cairn.ErrInvalid)
	}
	var match []cairn.ID
	for _, id := range ids {
		if strings.HasPrefix(id.String(), prefix) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return cairn.ID{}, fmt.Errorf("%s %s: %w", what, prefix, cairn.ErrNotFound)
	case 1:
		return match[0], nil
	default:
		return cairn.ID{}, fmt.Errorf("%s id prefix %s matches %d %ss: %w", what, prefix, len(match), what, cairn.ErrInvalid)
	}
}

// putSealed seals plaintext as an object of type typ and stores it.
func (r *Repository) putSealed(ctx context.Context, typ byte, name string, plaintext []byte, opts objstore.PutOptions) (int, error) {
	data, err := r.sealer.Seal(nil, typ, name, plaintext, format.LevelDefault)
	if err != nil {
		return 0, err
	}
	if err := r.be.Put(ctx, name, data, opts); err != nil {
		return 0, err
	}
	return len(data), nil
}

// getSealed reads and opens an object of type typ. An object that fails
// verification is read again (up to fetchAttempts times) before the
// damage is believed to be in the store.
func (r *Repository) getSealed(ctx context.Context, typ byte, name string) ([]byte, error) {
	var err error
	for attempt := 0; attempt < fetchAttempts; attempt++ {
		var data, plain []byte
		data, err = objstore.ReadAll(ctx, r.be, name, 0, -1)
		if err != nil {
			return nil, err
		}
		plain, err = r.sealer.Open(nil, typ, name, data, format.MaxMetadataSize)
		if err == nil {
			return plain, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, err)
}

func (r *Repository) putJSON(ctx context.Context, typ byte, name string, v any, opts objstore.PutOptions) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = r.putSealed(ctx, typ, name, data, opts)
	return err
}
