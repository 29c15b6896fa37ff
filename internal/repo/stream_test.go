package repo_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/retry"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

const (
	mib = 1 << 20
	// The test chunker's sizes (testChunker).
	minChunk = 32 << 10
	maxChunk = 256 << 10
)

// testChunker cuts streams into chunks of 32 to 256 KiB, about 96 KiB on
// average: the tests' streams of a few MiB then have as many chunks as
// production streams of hundreds of MiB. The chunking code is the same.
func testChunker() format.ChunkerParams {
	return format.ChunkerParams{Algorithm: format.ChunkerRabinKeyed, MinSize: minChunk, MaxSize: maxChunk, AverageBits: 16}
}

// small makes r cut streams with testChunker.
func small(r *repo.Repository) *repo.Repository {
	repo.SetStreamChunker(r, testChunker())
	return r
}

// lockedRand is a deterministic source for a repository's master key and
// nonces: the key decides the stream chunker's cut points, so with it the
// chunks of a stream are the same in every run. It is safe for
// concurrent use, as Options.Rand must be.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func seeded(seed byte) *lockedRand {
	var s [32]byte
	s[0] = seed
	return &lockedRand{r: rand.NewChaCha8(s)}
}

func (l *lockedRand) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// seededOpts are o with a master key from seed.
func seededOpts(o repo.Options, seed byte) repo.Options {
	o.Rand = seeded(seed)
	return o
}

// newStreamRepo makes a repository in a mem store with the master key of
// seed 1, cutting streams with testChunker.
func newStreamRepo(t *testing.T) (*repo.Repository, *mem.Backend) {
	t.Helper()
	be := mem.New(mem.Options{})
	return small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(time.Minute)}, seededOpts(testOpts(), 1))), be
}

// pipeReader hands out data in reads of varying sizes, as a pipe does.
type pipeReader struct {
	data []byte
	off  int
	n    int
}

func (p *pipeReader) Read(b []byte) (int, error) {
	if p.off == len(p.data) {
		return 0, io.EOF
	}
	sizes := []int{1, 4095, 65536, 1<<20 + 7, 300}
	k := min(len(b), sizes[p.n%len(sizes)], len(p.data)-p.off)
	p.n++
	copy(b, p.data[p.off:p.off+k])
	p.off += k
	return k, nil
}

func streamBackup(t *testing.T, r *repo.Repository, data []byte, name string) *format.Manifest {
	t.Helper()
	m, err := r.BackupStream(t.Context(), &pipeReader{data: data}, repo.StreamOptions{Name: name})
	if err != nil {
		t.Fatalf("stream backup: %v", err)
	}
	return m
}

// indexChunks returns the distinct chunks a backup references.
func indexChunks(t *testing.T, r *repo.Repository, m *format.Manifest) map[format.ChunkID]bool {
	t.Helper()
	entries, err := r.Index(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	out := map[format.ChunkID]bool{}
	for _, e := range entries {
		if !e.Zero {
			out[e.Chunk] = true
		}
	}
	return out
}

func TestStreamRoundTrip(t *testing.T) {
	random := func(seed uint64, n int) []byte {
		r := rand.New(rand.NewPCG(seed, 9))
		out := make([]byte, n)
		for i := range out {
			out[i] = byte(r.Uint32())
		}
		return out
	}
	tests := []struct {
		name string
		data []byte
		// newChunks is how many chunks the backup must store, when known
		// from the data alone; -1 when the cut points decide.
		newChunks int
	}{
		{"empty", nil, 0},
		{"one byte", []byte{7}, 1},
		{"min chunk minus one", random(1, minChunk-1), 1},
		{"min chunk", random(2, minChunk), 1},
		{"min chunk plus one", random(3, minChunk+1), -1},
		// One repeated byte never makes the fingerprint's low bits zero
		// (for this key): the stream is cut at the maximum, and the
		// chunks are alike.
		{"max chunk minus one", bytes.Repeat([]byte{'x'}, maxChunk-1), 1},
		{"max chunk", bytes.Repeat([]byte{'x'}, maxChunk), 1},
		{"max chunk plus one", bytes.Repeat([]byte{'x'}, maxChunk+1), 2},
		{"a run cut at the maximum", bytes.Repeat([]byte{'x'}, 2*maxChunk+3), 2},
		// Zeros are cut at the minimum and never stored.
		{"zeros", make([]byte, 5*maxChunk+100), 0},
		{"pgbench dump", repotest.PgbenchDump(1, 2*mib), -1},
		{"mixed", repotest.Mixed(2, 2*mib, 64<<10), -1},
		// The production chunker (512 KiB to 8 MiB).
		{"production sizes", repotest.PgbenchDump(3, 4*mib), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newStreamRepo(t)
			params := testChunker()
			if tc.name == "production sizes" {
				params = repo.StreamChunker()
				repo.SetStreamChunker(r, params)
			}
			m, err := r.BackupStream(t.Context(), &pipeReader{data: tc.data}, repo.StreamOptions{
				Name: "db1/pg_dump", Tags: map[string]string{"db": "db1"}, DataTime: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
			if err != nil {
				t.Fatal(err)
			}
			if !m.IsStream() || m.Version != format.ManifestVersionStream || m.Size != int64(len(tc.data)) ||
				m.Stream.Hash != format.Hash(blake3.Sum256(tc.data)) || m.Stream.Chunker != params || m.ChunkSize != params.MaxSize ||
				m.Source != "db1/pg_dump" || m.Tags["db"] != "db1" || !m.DataTime.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("manifest %+v", m)
			}
			if tc.newChunks >= 0 && m.Stats.ChunksNew != tc.newChunks {
				t.Fatalf("stored %d chunks, want %d: %+v", m.Stats.ChunksNew, tc.newChunks, m.Stats)
			}
			if m.Stats.BytesRead != m.Size {
				t.Fatalf("read %d of %d bytes", m.Stats.BytesRead, m.Size)
			}
			// Read back as another process would.
			back, err := reopen(t, r.Backend()).Manifest(t.Context(), m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if back.Kind != format.KindStream || back.Stream == nil || back.Stream.Hash != m.Stream.Hash {
				t.Fatalf("manifest read back: %+v", back)
			}
			entries, err := r.Index(t.Context(), m)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range entries {
				if e.Length > params.MaxSize || i < len(entries)-1 && e.Length < params.MinSize || e.ChunkOffset != 0 {
					t.Fatalf("entry %d of %d: %+v", i, len(entries), e)
				}
			}
			restoreAndCompare(t, r, m, tc.data)
			checkClean(t, r)
		})
	}
}

// A stream with a few bytes inserted, deleted and changed shares all but
// a few chunks with the stream it came from: those around the edits.
func TestStreamDedup(t *testing.T) {
	counts := &countingBackend{Backend: mem.New(mem.Options{})}
	r := small(initRepoWith(t, counts, format.GCParams{SessionTimeout: format.Duration(time.Minute)}, seededOpts(testOpts(), 1)))
	first := repotest.PgbenchDump(10, 5*mib)
	m1 := streamBackup(t, r, first, "db1")
	before := len(chunkNames(t, counts.Backend))
	if before != m1.Stats.ChunksNew || before < 33 {
		t.Fatalf("first backup: %d chunks stored, %d new; want more than 32 (the probe limit)", before, m1.Stats.ChunksNew)
	}

	// Three edits, far apart: a row inserted, ten bytes deleted, a
	// balance changed.
	second := slices.Clone(first)
	line := func(at int) int { return at + bytes.IndexByte(second[at:], '\n') + 1 }
	at := line(len(second) * 2 / 5)
	second = slices.Insert(second, at, []byte("999999\t1\t-77\t"+strings.Repeat(" ", 84)+"\n")...)
	at = len(second) / 5
	second = slices.Delete(second, at, at+10)
	at = line(len(second) * 3 / 4)
	second[at+2] ^= 1
	counts.reset()
	m2 := streamBackup(t, r, second, "db1")

	const edits = 3
	after := len(chunkNames(t, counts.Backend))
	if after-before != m2.Stats.ChunksNew {
		t.Fatalf("the store grew by %d chunks, the backup says it stored %d", after-before, m2.Stats.ChunksNew)
	}
	// Each edit changes the chunk it falls in, and at most the next one
	// (when it moves a cut point).
	if m2.Stats.ChunksNew < 1 || m2.Stats.ChunksNew > 2*edits {
		t.Fatalf("the edited stream stored %d new chunks for %d edits", m2.Stats.ChunksNew, edits)
	}
	c1, c2 := indexChunks(t, r, m1), indexChunks(t, r, m2)
	shared := 0
	for c := range c2 {
		if c1[c] {
			shared++
		}
	}
	if shared != len(c2)-m2.Stats.ChunksNew || m2.Stats.ChunksReused != shared {
		t.Fatalf("%d of %d chunks shared, %d new, %d reused", shared, len(c2), m2.Stats.ChunksNew, m2.Stats.ChunksReused)
	}
	if m2.Stats.BytesDedup+m2.Stats.BytesNew != m2.Size || m2.Stats.BytesNew > int64(m2.Stats.ChunksNew)*maxChunk {
		t.Fatalf("stats %+v for a stream of %d bytes", m2.Stats, m2.Size)
	}
	t.Logf("%d chunks, %d shared, %d new (%d of %d bytes) for %d edits", len(c2), shared, m2.Stats.ChunksNew, m2.Stats.BytesNew, m2.Size, edits)
	// A long stream looks up its first chunks one by one, then lists the
	// store once.
	if s, l := counts.chunkStats.Load(), counts.chunkLists.Load(); s != 32 || l != 1 {
		t.Fatalf("a stream of %d chunks made %d chunk lookups and %d listings, want 32 and 1", len(c2), s, l)
	}

	// A short stream (a log segment: 16 MiB is at most 32 chunks at
	// production sizes, 1 MiB here) never lists the store.
	counts.reset()
	seg := streamBackup(t, r, repotest.PgbenchDump(11, 32*minChunk), "wal")
	if l := counts.chunkLists.Load(); l != 0 {
		t.Fatalf("a short stream listed the store's chunks %d times", l)
	}
	if n, s := len(indexChunks(t, r, seg)), counts.chunkStats.Load(); s != int64(n) {
		t.Fatalf("a short stream of %d chunks made %d lookups", n, s)
	}

	// The first stream again stores nothing.
	m3 := streamBackup(t, r, first, "db1")
	if m3.Stats.ChunksNew != 0 {
		t.Fatalf("the same stream again stored %d chunks", m3.Stats.ChunksNew)
	}
	restoreAndCompare(t, r, m1, first)
	restoreAndCompare(t, r, m2, second)
	checkClean(t, r)
}

// countingBackend counts the lookups and listings of chunks.
type countingBackend struct {
	objstore.Backend
	chunkStats, chunkLists atomic.Int64
}

func (b *countingBackend) reset() { b.chunkStats.Store(0); b.chunkLists.Store(0) }

func (b *countingBackend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	if strings.HasPrefix(name, format.ChunksPrefix) {
		b.chunkStats.Add(1)
	}
	return b.Backend.Stat(ctx, name)
}

func (b *countingBackend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if prefix == format.ChunksPrefix {
		b.chunkLists.Add(1)
	}
	return b.Backend.List(ctx, prefix, fn)
}

// The cut points come from the master key: the same key cuts a stream the
// same way in every deployment (so their backups dedup), another key cuts
// it elsewhere (so chunk sizes say nothing about content to whoever does
// not hold the key). The golden file pins the cuts of one key, so that a
// change of the chunker, which would silently end dedup with older
// backups, fails here.
func TestStreamChunkerKeyed(t *testing.T) {
	data := repotest.PgbenchDump(20, 2*mib)
	cuts := func(r *repo.Repository, m *format.Manifest) []int64 {
		entries, err := r.Index(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range entries {
			out = append(out, e.Length)
		}
		return out
	}
	r1, be1 := newStreamRepo(t)
	m1 := streamBackup(t, r1, data, "s")
	c1 := cuts(r1, m1)

	// Another deployment with the key: the same cuts, nothing stored.
	other := small(reopen(t, be1))
	m := streamBackup(t, other, data, "s")
	if got := cuts(other, m); !slices.Equal(got, c1) || m.Stats.ChunksNew != 0 {
		t.Fatalf("the same key cut %v, then %v (%d chunks stored)", c1, got, m.Stats.ChunksNew)
	}

	r2 := small(initRepoWith(t, mem.New(mem.Options{}), format.GCParams{SessionTimeout: format.Duration(time.Minute)}, seededOpts(testOpts(), 2)))
	if c2 := cuts(r2, streamBackup(t, r2, data, "s")); slices.Equal(c2, c1) {
		t.Fatalf("two keys cut the stream alike: %v", c1)
	}

	var text strings.Builder
	for _, c := range c1 {
		fmt.Fprintln(&text, c)
	}
	path := filepath.Join("testdata", "stream-cuts.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if text.String() != string(want) {
		t.Fatalf("the chunker cuts the golden stream differently:\n%s\nwant:\n%s\nbackups of streams would no longer dedup with older ones", text.String(), want)
	}
}

// errAfterReader fails with err once it has handed out n bytes.
type errAfterReader struct {
	r   io.Reader
	n   int
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, e.err
	}
	k, err := e.r.Read(p[:min(len(p), e.n)])
	e.n -= k
	return k, err
}

// objectsUnder lists the names of the objects under prefix.
func objectsUnder(t *testing.T, be objstore.Backend, prefix string) []string {
	t.Helper()
	var names []string
	if err := be.List(t.Context(), prefix, func(i objstore.ObjectInfo) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

// A stream whose reader fails (the dump tool died) leaves no backup, no
// session and no index; gc removes what it stored; the next backup of the
// stream succeeds.
func TestStreamReaderFails(t *testing.T) {
	r, be := newStreamRepo(t)
	data := repotest.PgbenchDump(30, 3*mib)
	_, err := r.BackupStream(t.Context(), &errAfterReader{r: &pipeReader{data: data}, n: 3*mib/2 + 123, err: errBoom}, repo.StreamOptions{Name: "db1"})
	if !errors.Is(err, errBoom) {
		t.Fatalf("backup of a failing stream: %v, want the reader's error", err)
	}
	list, err := r.Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 0 {
		t.Fatal("a failed stream backup is visible")
	}
	for _, prefix := range []string{format.SessionsPrefix, format.IndexesPrefix, format.HoldsPrefix} {
		if left := objectsUnder(t, be, prefix); len(left) != 0 {
			t.Fatalf("the failed backup left %v", left)
		}
	}
	checkClean(t, r)
	if _, err := r.GC(t.Context(), repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if left := chunkNames(t, be); len(left) != 0 {
		t.Fatalf("gc left %d chunks of the failed backup", len(left))
	}
	m := streamBackup(t, r, data, "db1")
	restoreAndCompare(t, r, m, data)
}

// cancelWriter cancels a context at its first write.
type cancelWriter struct {
	cancel context.CancelFunc
	bytes.Buffer
}

func (c *cancelWriter) Write(p []byte) (int, error) {
	c.cancel()
	return c.Buffer.Write(p)
}

func TestStreamCancelled(t *testing.T) {
	r, be := newStreamRepo(t)
	data := repotest.PgbenchDump(31, 3*mib)
	t.Run("backup", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// The reader cancels the backup half-way, and goes on.
		pr := &pipeReader{data: data}
		cancelling := readerFunc(func(p []byte) (int, error) {
			if pr.off >= len(data)/2 {
				cancel()
			}
			return pr.Read(p)
		})
		_, err := r.BackupStream(ctx, cancelling, repo.StreamOptions{Name: "db1"})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled backup: %v", err)
		}
		list, err := r.Backups(t.Context())
		if err != nil || len(list.Backups) != 0 {
			t.Fatalf("cancelled backup visible: %v %v", list, err)
		}
		if left := objectsUnder(t, be, format.SessionsPrefix); len(left) != 0 {
			t.Fatalf("the cancelled backup left %v", left)
		}
	})
	t.Run("restore", func(t *testing.T) {
		m := streamBackup(t, r, data, "db1")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := &cancelWriter{cancel: cancel}
		_, err := r.RestoreStream(ctx, m, w, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled restore: %v", err)
		}
		if !bytes.HasPrefix(data, w.Bytes()) {
			t.Fatal("the cancelled restore wrote bytes that are not the stream's")
		}
	})
}

// A restore checks the whole stream's hash at the end: were the index to
// name other chunks than the stream's (each one sound), it would fail.
func TestStreamRestoreChecksTheWholeStream(t *testing.T) {
	r, _ := newStreamRepo(t)
	data := repotest.PgbenchDump(32, mib)
	m := streamBackup(t, r, data, "db1")
	other := *m
	other.Stream = &format.StreamInfo{Hash: m.Stream.Hash, Chunker: m.Stream.Chunker}
	other.Stream.Hash[7] ^= 1
	var out bytes.Buffer
	_, err := r.RestoreStream(t.Context(), &other, &out, nil)
	if !errors.Is(err, cairn.ErrCorrupt) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("restore against another hash: %v", err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("the restore wrote other bytes than the stream's")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// A damaged or missing chunk fails a restore with ErrCorrupt naming it,
// after writing only bytes of the stream; check names the backup.
func TestStreamRestoreDamage(t *testing.T) {
	for _, damage := range []string{"corrupt", "missing"} {
		t.Run(damage, func(t *testing.T) {
			r, be := newStreamRepo(t)
			data := repotest.Mixed(40, 2*mib, 64<<10)
			m := streamBackup(t, r, data, "db1")
			entries, err := r.Index(t.Context(), m)
			if err != nil {
				t.Fatal(err)
			}
			var victim format.ChunkID
			for _, e := range entries[2:] {
				if !e.Zero {
					victim = e.Chunk
					break
				}
			}
			name := victim.ObjectName()
			if damage == "missing" {
				if err := be.Delete(t.Context(), name); err != nil {
					t.Fatal(err)
				}
			} else {
				obj, err := objstore.ReadAll(t.Context(), be, name, 0, -1)
				if err != nil {
					t.Fatal(err)
				}
				obj[len(obj)/2] ^= 0x10
				if err := be.Put(t.Context(), name, obj, objstore.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			_, err = r.RestoreStream(t.Context(), m, &out, nil)
			if !errors.Is(err, cairn.ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) {
				t.Fatalf("stream restore over a %s chunk: %v", damage, err)
			}
			if !bytes.HasPrefix(data, out.Bytes()) || out.Len() == len(data) {
				t.Fatalf("the failed restore wrote %d bytes that are not a prefix of the stream", out.Len())
			}
			if _, err := r.Restore(t.Context(), m, repotest.NewTarget(m.Size), nil); !errors.Is(err, cairn.ErrCorrupt) {
				t.Fatalf("restore to a target over a %s chunk: %v", damage, err)
			}
			rep, err := r.Check(t.Context(), repo.CheckOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			kind := map[string]string{"corrupt": repo.ProblemCorruptChunk, "missing": repo.ProblemMissingChunk}[damage]
			if len(rep.Problems) != 1 || rep.Problems[0].Kind != kind || rep.Problems[0].Object != name ||
				!slices.Equal(rep.Problems[0].Backups, []cairn.ID{m.ID}) {
				t.Fatalf("check: %v", rep.Problems)
			}
		})
	}
}

// TestStreamRestoreFailBesideZeros: a stream whose first chunk is
// missing, followed by a long zero run. The fetch fails at once and ends
// its stages while the index reader still hands zero pieces straight to
// the writer; the restore must fail with the damage, not send on (or
// race with the close of) the writer's channel. The race detector saw
// that once under load in TestStreamRestoreDamage.
func TestStreamRestoreFailBesideZeros(t *testing.T) {
	// One transfer: the fetch stage ends with its only fetcher's failure,
	// before the index reader is done.
	o := seededOpts(testOpts(), 1)
	o.Transfers = 1
	be := mem.New(mem.Options{})
	r := small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(time.Minute)}, o))
	data := make([]byte, 4<<10+8*mib)
	rnd := rand.New(rand.NewPCG(3, 3))
	for i := range 4 << 10 {
		data[i] = byte(rnd.Uint32())
	}
	m := streamBackup(t, r, data, "zeros")
	entries, err := r.Index(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	if entries[0].Zero || !entries[len(entries)-1].Zero {
		t.Fatalf("want a data chunk first and zeros last, got %d entries", len(entries))
	}
	if err := be.Delete(t.Context(), entries[0].Chunk.ObjectName()); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := r.RestoreStream(t.Context(), m, io.Discard, nil); !errors.Is(err, cairn.ErrCorrupt) {
			t.Fatalf("stream restore over a missing first chunk: %v", err)
		}
	}
}

// Through a store that fails requests (some after the write landed),
// behind the retry policy, stream backups complete; through one that also
// corrupts and truncates reads, a restore writes only bytes of the stream
// and either completes or says the data is damaged.
func TestStreamFaultyStore(t *testing.T) {
	clean := mem.New(mem.Options{})
	fb := faulty.New(clean, faulty.Options{Seed: 7, FailRate: 0.2, FailAfterRate: 0.05})
	instant := retry.Policy{Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
	be := retry.New(fb, instant)
	r := small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(time.Minute)}, seededOpts(testOpts(), 1)))
	data := repotest.PgbenchDump(50, 2*mib)
	var ms []*format.Manifest
	for i := range 3 {
		repotest.Scribble(uint64(50+i), data, 3, 1000)
		m := streamBackup(t, r, data, "db1")
		ms = append(ms, m)
		restoreAndCompare(t, r, m, data)
	}
	if fb.Injected() == 0 {
		t.Fatal("no fault was injected")
	}
	checkClean(t, reopen(t, clean))

	for seed := range uint64(4) {
		fb.SetOptions(faulty.Options{Seed: seed, FailRate: 0.1, CorruptRate: 0.05, TruncateRate: 0.05, Prefix: format.ChunksPrefix})
		var out bytes.Buffer
		_, err := r.RestoreStream(t.Context(), ms[2], &out, nil)
		switch {
		case err == nil && !bytes.Equal(out.Bytes(), data):
			t.Fatalf("seed %d: the restore succeeded with wrong bytes", seed)
		case err != nil && !errors.Is(err, cairn.ErrCorrupt):
			t.Fatalf("seed %d: the restore failed with %v, want success or damage", seed, err)
		case !bytes.HasPrefix(data, out.Bytes()):
			t.Fatalf("seed %d: the restore wrote bytes that are not the stream's", seed)
		}
	}

	// A store that refuses every chunk ends the backup with its error.
	fb.SetOptions(faulty.Options{Prefix: format.ChunksPrefix, FailRate: 1})
	direct := small(reopen(t, fb))
	if _, err := direct.BackupStream(t.Context(), &pipeReader{data: repotest.PgbenchDump(51, mib)}, repo.StreamOptions{Name: "db2"}); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("backup to a store refusing chunks: %v", err)
	}
	fb.SetOptions(faulty.Options{})
	list, err := r.Backups(t.Context())
	if err != nil || len(list.Backups) != 3 {
		t.Fatalf("%d backups after a failed one, want 3: %v", len(list.Backups), err)
	}
}

// Stream and volume backups live side by side: a volume's parent is
// never a stream, ranges are diffed only between volumes, a volume is not
// restored as a stream, and forget + gc free exactly what no remaining
// backup of either kind references.
func TestStreamsAmongVolumes(t *testing.T) {
	r, be := newStreamRepo(t)
	ctx := t.Context()
	img := repotest.Mixed(60, 40*testChunk, testChunk)
	v1 := backup(t, r, &repotest.Source{Data: img}, repo.BackupOptions{SourceName: "db1"})
	dump := repotest.PgbenchDump(61, 2*mib)
	s1 := streamBackup(t, r, dump, "db1")
	dump2 := slices.Clone(dump)
	repotest.Scribble(62, dump2, 2, 100)
	s2 := streamBackup(t, r, dump2, "db1")

	if v1.Kind != format.KindVolume || s1.Kind != format.KindStream {
		t.Fatalf("kinds %q and %q", v1.Kind, s1.Kind)
	}
	latest, err := r.Latest(ctx, "db1")
	if err != nil || latest == nil || latest.ID != v1.ID {
		t.Fatalf("latest volume backup of db1: %v %v, want %s", latest, err, v1.ID.Short())
	}
	v2 := backup(t, r, &repotest.Source{Data: img}, repo.BackupOptions{SourceName: "db1"})
	if v2.Parent == nil || *v2.Parent != v1.ID {
		t.Fatalf("volume backup's parent %v, want %s", v2.Parent, v1.ID.Short())
	}
	if _, err := r.Backup(ctx, &repotest.Source{Data: img}, repo.BackupOptions{SourceName: "db1", Parent: &s1.ID}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a volume backup with a stream for parent: %v", err)
	}
	if _, err := r.Diff(ctx, s1, s2); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("diff of streams: %v", err)
	}
	if _, err := r.Diff(ctx, v1, s2); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("diff of a volume and a stream: %v", err)
	}
	if _, err := r.RestoreStream(ctx, v1, io.Discard, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a volume backup restored as a stream: %v", err)
	}
	list, err := r.Backups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, m := range list.Backups {
		kinds = append(kinds, m.Kind)
	}
	if !slices.Equal(kinds, []string{"volume", "stream", "stream", "volume"}) {
		t.Fatalf("listed kinds %v", kinds)
	}

	for _, gone := range []*format.Manifest{s1, v1, s2} {
		if err := r.Forget(ctx, []cairn.ID{gone.ID}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, want := chunkNames(t, be), referenced(t, r); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after forgetting %s, gc left %d chunks for %d referenced", gone.ID.Short(), len(got), len(want))
		}
		if gone == s1 {
			restoreAndCompare(t, r, s2, dump2)
		}
	}
	restoreAndCompare(t, r, v2, img)
	checkClean(t, r)
}

// TestStreamCrashDuringBackup stops the store after every possible number
// of writes of a stream backup: no half backup is visible, the repository
// checks clean, and the next backup succeeds, reusing what was stored.
func TestStreamCrashDuringBackup(t *testing.T) {
	clk := newClock()
	be := mem.New(mem.Options{Now: clk.Now})
	initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, seededOpts(clockOpts(clk), 1))
	data := repotest.PgbenchDump(70, mib/2)

	reused := false
	for n := 1; ; n++ {
		snapshot := cloneMem(t, be, clk)
		fb := faulty.New(snapshot, faulty.Options{CrashAfter: n})
		rr, err := repo.Open(t.Context(), fb, password, clockOpts(clk))
		if err != nil {
			t.Fatal(err)
		}
		small(rr)
		_, err = rr.BackupStream(t.Context(), &pipeReader{data: data}, repo.StreamOptions{Name: "db1"})
		if !fb.Crashed() {
			if err != nil {
				t.Fatal(err)
			}
			if n < 3 {
				t.Fatal("backup finished without enough writes to test")
			}
			break
		}
		want := 0
		if err == nil {
			want = 1 // the crash hit its clean-up
		}
		after := small(reopenWith(t, snapshot, clockOpts(clk)))
		list, lerr := after.Backups(t.Context())
		if lerr != nil || len(list.Backups) != want || len(list.Damaged) != 0 {
			t.Fatalf("crash after %d writes (backup error %v): %d backups visible, damaged %v, %v", n, err, len(list.Backups), list.Damaged, lerr)
		}
		checkClean(t, after)
		// The dump has no chunk twice: what is reused was stored before
		// the crash.
		m := streamBackup(t, after, data, "db1")
		restoreAndCompare(t, after, m, data)
		reused = reused || m.Stats.ChunksReused > 0
	}
	if !reused {
		t.Fatal("no backup after a crash reused the chunks stored before it")
	}
}

// startStreamBackup runs a stream backup in a goroutine the test waits for
// at its end (when t.Context has ended, which releases gates and sleeps).
func startStreamBackup(t *testing.T, r *repo.Repository, rd io.Reader, name string) <-chan result {
	done := make(chan result, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		m, err := r.BackupStream(t.Context(), rd, repo.StreamOptions{Name: name})
		done <- result{m, err}
	}()
	t.Cleanup(func() { <-finished })
	return done
}

// A stream backup that already uses chunks which a gc then condemns holds
// the condemned set when it sees it: the set is swept only after the
// backup ends, and then only of what the backup did not reference. (The
// stream twin of TestGCProtocolHoldAfterUse.)
func TestStreamGCProtocolHoldAfterUse(t *testing.T) {
	clk := newClock()
	be := mem.New(mem.Options{Now: clk.Now})
	r := small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, seededOpts(clockOpts(clk), 1)))
	ctx := t.Context()
	data := repotest.PgbenchDump(80, 3*mib/2)
	f := streamBackup(t, r, data, "f")
	fChunks := indexChunks(t, r, f)

	// b changes the stream's end. One worker takes the chunks in order,
	// so when b stores its first chunk, near the end, it has claimed
	// (reused) all the others; there it pauses.
	changed := slices.Clone(data)
	changed[len(changed)-100] ^= 1
	upload := newGate(t)
	wbe := &watchedBackend{Backend: be, beforePut: func(name string) {
		if strings.HasPrefix(name, format.ChunksPrefix) {
			upload.wait()
		}
	}}
	opts := clockOpts(clk)
	opts.Workers = 1
	beats := heartbeats(&opts)
	done := startStreamBackup(t, small(reopenWith(t, wbe, opts)), &pipeReader{data: changed}, "b")
	<-upload.reached

	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	s1, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s1.ChunksCondemned != len(fChunks) || s1.ChunksDeleted != 0 || !strings.Contains(pendingText(s1), "has not seen it") {
		t.Fatalf("first gc: %+v", s1)
	}
	// b's heartbeat: it sees the set, finds it lists chunks b uses, and
	// holds it.
	clk.Advance(time.Second)
	clk.Tick()
	if err := <-beats; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	s2, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ChunksDeleted != 0 || !strings.Contains(pendingText(s2), "held by") {
		t.Fatalf("second gc: %+v", s2)
	}
	close(upload.open)
	b := waitResult(t, done)
	bChunks := indexChunks(t, r, b)
	fOnly := 0
	for c := range fChunks {
		if !bChunks[c] {
			fOnly++
		}
	}
	if fOnly == 0 || fOnly == len(fChunks) {
		t.Fatalf("f has %d chunks b does not use, of %d: the test needs some shared and some not", fOnly, len(fChunks))
	}
	s3, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s3.ChunksDeleted != fOnly || s3.ChunksPending != 0 {
		t.Fatalf("third gc deleted %d chunks, want f's %d that b does not use: %+v", s3.ChunksDeleted, fOnly, s3)
	}
	restoreAndCompare(t, r, b, changed)
	checkClean(t, r)
}

// A stream backup that starts after a set was condemned reuses its chunks
// only after holding it; the gc then keeps them. (The stream twin of
// TestGCProtocolHoldBeforeReuse.)
func TestStreamGCProtocolHoldBeforeReuse(t *testing.T) {
	clk := newClock()
	be := mem.New(mem.Options{Now: clk.Now})
	r := small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, seededOpts(clockOpts(clk), 1)))
	ctx := t.Context()
	data := repotest.PgbenchDump(81, 3*mib/2)
	f := streamBackup(t, r, data, "f")
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	// A running backup that has not seen the set keeps it from being
	// swept at once.
	g := newGate(t)
	gOpts := clockOpts(clk)
	gBeats := heartbeats(&gOpts)
	blocker := startBackup(t, reopenWith(t, be, gOpts), &repotest.Source{Data: repotest.Mixed(82, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "g"})
	<-g.reached
	s1, err := r.GC(ctx, repo.GCOptions{})
	if err != nil || s1.ChunksDeleted != 0 || s1.ChunksPending == 0 {
		t.Fatalf("first gc: %+v %v", s1, err)
	}
	clk.Advance(time.Second)
	clk.Tick()
	if err := <-gBeats; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}

	// b streams the same data: it reuses the set's chunks. Paused before
	// its index, with every chunk claimed, it must hold the set.
	index := newGate(t)
	wbe := &watchedBackend{Backend: be, beforePut: func(name string) {
		if strings.HasPrefix(name, format.IndexesPrefix) {
			index.wait()
		}
	}}
	done := startStreamBackup(t, small(reopenWith(t, wbe, clockOpts(clk))), &pipeReader{data: data}, "b")
	select {
	case <-index.reached:
	case res := <-done:
		t.Fatalf("backup ended before writing its index: %v", res.err)
	}
	s, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.ChunksDeleted != 0 || !strings.Contains(pendingText(s), "held by") {
		t.Fatalf("gc while a stream backup reuses the set's chunks: %+v", s)
	}
	close(index.open)
	b := waitResult(t, done)
	if b.Stats.ChunksNew != 0 {
		t.Fatalf("backup stored %d chunks that were condemned but held", b.Stats.ChunksNew)
	}
	close(g.open)
	waitResult(t, blocker)
	s2, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ChunksDeleted != 0 || s2.ChunksPending != 0 {
		t.Fatalf("gc after the backups: %+v", s2)
	}
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}

// A stream backup that needs a chunk of a set being swept waits for the
// sweep to end and uploads the chunk again. (The stream twin of
// TestGCProtocolWaitForSweep.)
func TestStreamGCProtocolWaitForSweep(t *testing.T) {
	clk := newClock()
	be := mem.New(mem.Options{Now: clk.Now})
	r := small(initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, seededOpts(clockOpts(clk), 1)))
	ctx := t.Context()
	data := repotest.PgbenchDump(83, mib)
	f := streamBackup(t, r, data, "f")
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	g := newGate(t)
	blocker := startBackup(t, reopenWith(t, be, clockOpts(clk)), &repotest.Source{Data: repotest.Mixed(84, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "g"})
	<-g.reached
	if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	sets := objectsUnder(t, be, format.CondemnedPrefix)
	if len(sets) != 1 {
		t.Fatalf("condemned sets %v", sets)
	}
	set := strings.TrimPrefix(sets[0], format.CondemnedPrefix)
	// Play a sweeper that has announced itself.
	if err := be.Put(ctx, format.SweepingPrefix+set, []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	done := startStreamBackup(t, small(reopenWith(t, be, clockOpts(clk))), &pipeReader{data: data}, "b")
	select {
	case res := <-done:
		t.Fatalf("backup finished during a sweep of chunks it needs: %+v", res)
	case <-clk.Sleeping(1):
	}
	// The sweep deletes the chunks and ends; the backup's next look finds
	// it over.
	for name := range chunkNames(t, be) {
		if err := be.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	_ = be.Delete(ctx, format.CondemnedPrefix+set)
	_ = be.Delete(ctx, format.SweepingPrefix+set)
	clk.WakeSleepers()
	b := waitResult(t, done)
	if b.Stats.ChunksNew != len(indexChunks(t, r, b)) {
		t.Fatalf("backup stored %d of its %d chunks again, want all: the sweep deleted them", b.Stats.ChunksNew, len(indexChunks(t, r, b)))
	}
	close(g.open)
	waitResult(t, blocker)
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}

// cpuTime is the CPU time the process has used, in all its threads: on a
// shared machine it measures the work, where the wall clock measures the
// neighbours too.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStreamBackup backs up 256 MiB of a pgbench-like dump to a mem
// store, in a fresh repository each time (every chunk is new). Besides
// the wall-clock rate it reports the CPU seconds per GiB.
func BenchmarkStreamBackup(b *testing.B) {
	data := repotest.PgbenchDump(90, 256*mib)
	opts := repo.Options{KDF: fastKDF}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		r, err := repo.Init(b.Context(), mem.New(mem.Options{}), password, repo.InitOptions{}, opts)
		if err != nil {
			b.Fatal(err)
		}
		cpu := cpuTime(b)
		b.StartTimer()
		m, err := r.BackupStream(b.Context(), bytes.NewReader(data), repo.StreamOptions{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric((cpuTime(b)-cpu).Seconds()*float64(1<<30)/float64(len(data)), "cpu-s/GiB")
		b.ReportMetric(float64(m.Stats.BytesStored)/float64(m.Size), "stored/byte")
		b.ReportMetric(float64(m.Size)/float64(m.Stats.ChunksNew+m.Stats.ChunksReused), "bytes/chunk")
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkStreamRestore restores 256 MiB of a pgbench-like dump from a
// mem store as a stream.
func BenchmarkStreamRestore(b *testing.B) {
	data := repotest.PgbenchDump(91, 256*mib)
	r, err := repo.Init(b.Context(), mem.New(mem.Options{}), password, repo.InitOptions{}, repo.Options{KDF: fastKDF})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	m, err := r.BackupStream(b.Context(), bytes.NewReader(data), repo.StreamOptions{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		if _, err := r.RestoreStream(b.Context(), m, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuTime(b)-cpu).Seconds()*float64(1<<30)/float64(len(data))/float64(b.N), "cpu-s/GiB")
}
