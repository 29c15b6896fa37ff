package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		holes bool
	}{
		{"empty", 0, false},
		{"one byte", 1, false},
		{"chunk minus one", testChunk - 1, false},
		{"one chunk", testChunk, false},
		{"chunk plus one", testChunk + 1, false},
		{"mixed", 20*testChunk + 123, false},
		{"mixed with holes", 20*testChunk + 123, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newMemRepo(t)
			src := &repotest.Source{Data: repotest.Mixed(1, tc.size, testChunk/2)}
			if tc.holes {
				// Declare the second quarter a hole; it must read as zeros.
				q := int64(tc.size / 4)
				clear(src.Data[q : 2*q])
				src.Alloc = []cairn.Extent{{Offset: 0, Length: q}, {Offset: 2 * q, Length: int64(tc.size) - 2*q}}
			}
			m := backup(t, r, src, repo.BackupOptions{})
			if m.Size != int64(tc.size) {
				t.Fatalf("manifest size %d", m.Size)
			}
			restoreAndCompare(t, r, m, src.Data)
			checkClean(t, r)
		})
	}
}

func TestHolesAndZerosAreNotStored(t *testing.T) {
	r, _ := newMemRepo(t)
	data := make([]byte, 16*testChunk)
	copy(data[3*testChunk:], bytes.Repeat([]byte("x"), 100))
	src := &repotest.Source{Data: data, Alloc: []cairn.Extent{{Offset: 0, Length: 8 * testChunk}}}
	m := backup(t, r, src, repo.BackupOptions{})
	if m.Stats.ChunksNew != 1 || m.Stats.BytesZero != 15*testChunk {
		t.Fatalf("stats %+v: want 1 new chunk and 15 zero chunks", m.Stats)
	}
	if got := src.BytesRead.Load(); got != 8*testChunk {
		t.Fatalf("read %d bytes; the 8 chunks in the hole must not be read", got)
	}
	restoreAndCompare(t, r, m, data)
}

func TestIncrementalAgainstParent(t *testing.T) {
	r, _ := newMemRepo(t)
	data := repotest.Mixed(2, 64*testChunk, testChunk)
	src := &repotest.Source{Data: bytes.Clone(data)}
	full := backup(t, r, src, repo.BackupOptions{})

	repotest.Scribble(3, src.Data, 3, 1000)
	inc := backup(t, r, src, repo.BackupOptions{})
	if inc.Parent == nil || *inc.Parent != full.ID {
		t.Fatalf("parent %v, want %s", inc.Parent, full.ID)
	}
	if inc.Stats.ChunksNew > 6 || inc.Stats.ChunksNew == 0 {
		t.Fatalf("incremental stored %d chunks for 3 small changes", inc.Stats.ChunksNew)
	}
	restoreAndCompare(t, r, full, data)
	restoreAndCompare(t, r, inc, src.Data)

	// Deleting the full backup never breaks the incremental.
	if err := r.Forget(t.Context(), []cairn.ID{full.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(t.Context(), repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, inc, src.Data)
	checkClean(t, r)
}

func TestChangedExtentsReadOnlyWhatChanged(t *testing.T) {
	r, _ := newMemRepo(t)
	src := &repotest.Source{Data: repotest.Mixed(4, 100*testChunk, testChunk)}
	backup(t, r, src, repo.BackupOptions{})

	changed := repotest.Scribble(5, src.Data, 5, 3000)
	src.BytesRead.Store(0)
	inc := backup(t, r, src, repo.BackupOptions{Changed: &extents.List{Size: -1, Extents: extents.Normalize(changed)}})
	touched := len(extents.Blocks(extents.Normalize(changed), testChunk, 100))
	if got := src.BytesRead.Load(); got != int64(touched)*testChunk {
		t.Fatalf("read %d bytes, want %d (the %d touched chunks)", got, touched*testChunk, touched)
	}
	if inc.Stats.BytesUnchanged < int64(100-touched)*testChunk {
		t.Fatalf("unchanged bytes %d", inc.Stats.BytesUnchanged)
	}
	restoreAndCompare(t, r, inc, src.Data)
}

func TestChangedExtentsErrors(t *testing.T) {
	r, _ := newMemRepo(t)
	src := &repotest.Source{Data: repotest.Mixed(6, 10*testChunk, testChunk)}
	hint := &extents.List{Size: -1, Extents: []cairn.Extent{{Offset: 0, Length: 1}}}
	_, err := r.Backup(t.Context(), src, repo.BackupOptions{SourceName: "x", Changed: hint})
	if !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("without a parent: %v", err)
	}
	backup(t, r, src, repo.BackupOptions{SourceName: "x"})
	for _, h := range []*extents.List{
		{Size: 5, Extents: nil},
		{Size: -1, Extents: []cairn.Extent{{Offset: 10 * testChunk, Length: 1}}},
	} {
		if _, err := r.Backup(t.Context(), src, repo.BackupOptions{SourceName: "x", Changed: h}); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("hint %+v: %v", h, err)
		}
	}
	list, _ := r.Backups(t.Context())
	if len(list.Backups) != 1 {
		t.Fatalf("failed backups left %d backups", len(list.Backups))
	}
}

func TestSourceGrowsAndShrinks(t *testing.T) {
	r, _ := newMemRepo(t)
	data := repotest.Mixed(7, 10*testChunk, testChunk)
	backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{})
	grown := append(bytes.Clone(data), repotest.Mixed(8, 3*testChunk+5, testChunk)...)
	changed := &extents.List{Size: -1, Extents: []cairn.Extent{{Offset: int64(len(data)), Length: int64(len(grown) - len(data))}}}
	m := backup(t, r, &repotest.Source{Data: grown}, repo.BackupOptions{Changed: changed})
	restoreAndCompare(t, r, m, grown)
	shrunk := data[:4*testChunk+7]
	m = backup(t, r, &repotest.Source{Data: shrunk}, repo.BackupOptions{})
	restoreAndCompare(t, r, m, shrunk)
}

func TestDedupAcrossSources(t *testing.T) {
	r, _ := newMemRepo(t)
	data := repotest.Mixed(9, 30*testChunk, testChunk)
	a := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "a"})
	b := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "b"})
	if b.Parent != nil || b.Stats.ChunksNew != 0 || b.Stats.BytesDedup != a.Stats.BytesNew {
		t.Fatalf("second source stored %d chunks, dedup %d of %d", b.Stats.ChunksNew, b.Stats.BytesDedup, a.Stats.BytesNew)
	}
	// Repeated content inside one source is stored once.
	rep := bytes.Repeat(data[:testChunk], 10)
	c := backup(t, r, &repotest.Source{Data: rep}, repo.BackupOptions{SourceName: "c", NoParent: true})
	if c.Stats.ChunksNew > 1 {
		t.Fatalf("repeated chunk stored %d times", c.Stats.ChunksNew)
	}
	restoreAndCompare(t, r, c, rep)
}

func TestChainRestoresIndependently(t *testing.T) {
	r, _ := newMemRepo(t)
	src := &repotest.Source{Data: repotest.Mixed(10, 40*testChunk, testChunk)}
	var versions [][]byte
	var ms []*repo.Repository
	_ = ms
	var manifests []string
	for i := range 12 {
		repotest.Scribble(uint64(100+i), src.Data, 2, 5000)
		m := backup(t, r, src, repo.BackupOptions{})
		versions = append(versions, bytes.Clone(src.Data))
		manifests = append(manifests, m.ID.String())
	}
	// Forget every other backup; each remaining one still restores.
	var forget []cairn.ID
	for i := 0; i < len(manifests); i += 2 {
		id, _ := cairn.ParseID(manifests[i])
		forget = append(forget, id)
	}
	if err := r.Forget(t.Context(), forget); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(t.Context(), repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(manifests); i += 2 {
		m, err := r.ResolveBackup(t.Context(), manifests[i][:10])
		if err != nil {
			t.Fatal(err)
		}
		restoreAndCompare(t, r, m, versions[i])
	}
	checkClean(t, r)
}

func TestDeltaRestore(t *testing.T) {
	r, _ := newMemRepo(t)
	data := repotest.Mixed(11, 50*testChunk, testChunk)
	m := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{})
	tgt := &repotest.Target{Data: bytes.Clone(data)}
	repotest.Scribble(12, tgt.Data, 3, 100)
	// Scribble a region that must be zero, too.
	for i := range tgt.Data {
		if i%testChunk == 0 && data[i] == 0 && isZeroRange(data[i:i+testChunk]) {
			tgt.Data[i+17] = 1
			break
		}
	}
	stats, err := r.Restore(t.Context(), m, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tgt.Data, data) {
		t.Fatal("delta restore produced different bytes")
	}
	if stats.BytesSkipped < 40*testChunk || stats.BytesWritten > 4*testChunk {
		t.Fatalf("delta restore skipped %d and wrote %d bytes", stats.BytesSkipped, stats.BytesWritten)
	}
}

// TestDeltaRestoreReadsOnlyAllocated: a delta restore into a target that
// says where it may hold data reads only there, and still leaves exactly
// the backup's bytes.
func TestDeltaRestoreReadsOnlyAllocated(t *testing.T) {
	r, _ := newMemRepo(t)
	const size = 64 * testChunk
	data := repotest.Mixed(13, size, testChunk)
	m := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{})
	tests := []struct {
		name string
		// fill puts data into the zeroed target and says where.
		fill func(tgt []byte) []cairn.Extent
		// maxWritten bounds what the restore may write.
		maxWritten int64
	}{
		{"empty", func([]byte) []cairn.Extent { return []cairn.Extent{} }, size},
		{"scribbled", func(tgt []byte) []cairn.Extent {
			var alloc []cairn.Extent
			for i, off := range []int64{5, 3*testChunk + 999, 40*testChunk - 7} {
				ext := cairn.Extent{Offset: off, Length: 3000}
				copy(tgt[ext.Offset:ext.End()], repotest.Mixed(uint64(20+i), int(ext.Length), 512))
				tgt[ext.Offset] = 0xff
				alloc = append(alloc, ext)
			}
			return alloc
		}, size},
		{"half restored", func(tgt []byte) []cairn.Extent {
			copy(tgt, data[:size/2])
			return []cairn.Extent{{Offset: 0, Length: size / 2}}
		}, size/2 + testChunk},
		{"allocated zeros", func([]byte) []cairn.Extent {
			return []cairn.Extent{{Offset: 10 * testChunk, Length: 20 * testChunk}}
		}, size},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tgt := &repotest.Target{Data: make([]byte, size)}
			tgt.Alloc = tc.fill(tgt.Data)
			var allocated int64
			for _, e := range tgt.Alloc {
				allocated += e.Length
			}
			stats, err := r.Restore(t.Context(), m, tgt, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tgt.Data, data) {
				t.Fatal("delta restore produced different bytes")
			}
			if got := tgt.Read.Load(); got > allocated {
				t.Errorf("delta restore read %d bytes of a target holding %d", got, allocated)
			}
			if stats.BytesWritten > tc.maxWritten {
				t.Errorf("delta restore wrote %d bytes, want at most %d", stats.BytesWritten, tc.maxWritten)
			}
		})
	}
}

func isZeroRange(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestDiff(t *testing.T) {
	r, _ := newMemRepo(t)
	src := &repotest.Source{Data: repotest.Mixed(13, 30*testChunk, testChunk)}
	a := backup(t, r, src, repo.BackupOptions{})
	src.Data[5*testChunk+10] ^= 0xff
	src.Data[6*testChunk] ^= 0xff
	src.Data[20*testChunk+1] ^= 0xff
	b := backup(t, r, src, repo.BackupOptions{})
	d, err := r.Diff(t.Context(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]cairn.Extent{{Offset: 5 * testChunk, Length: 2 * testChunk}, {Offset: 20 * testChunk, Length: testChunk}})
	if fmt.Sprint(d.Extents) != want {
		t.Fatalf("diff %v, want %v", d.Extents, want)
	}
	// The diff is a valid hint: a backup from it equals a full read.
	c := backup(t, r, src, repo.BackupOptions{Parent: &a.ID, Changed: d})
	restoreAndCompare(t, r, c, src.Data)
}

var errBoom = errors.New("boom")

// failingSource fails the reads that start at one offset.
type failingSource struct {
	*repotest.Source
	at int64
}

func (s *failingSource) ReadAt(p []byte, off int64) (int, error) {
	if off == s.at {
		return 0, errBoom
	}
	return s.Source.ReadAt(p, off)
}

// failingTarget fails its reads or writes at one offset.
type failingTarget struct {
	*repotest.Target
	readAt, writeAt int64
}

func (t *failingTarget) ReadAt(p []byte, off int64) (int, error) {
	if off <= t.readAt && t.readAt < off+int64(len(p)) {
		return 0, errBoom
	}
	return t.Target.ReadAt(p, off)
}

func (t *failingTarget) WriteAt(p []byte, off int64) (int, error) {
	if off <= t.writeAt && t.writeAt < off+int64(len(p)) {
		return 0, errBoom
	}
	return t.Target.WriteAt(p, off)
}

// A failure anywhere in a backup's or a restore's pipeline ends it with
// that failure, and nothing of a failed backup becomes visible.
func TestPipelineErrors(t *testing.T) {
	data := randomChunks(30, 24)
	changed := bytes.Clone(data)
	changed[10*testChunk+5] ^= 1
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, r *repo.Repository, be *faulty.Backend, parent *format.Manifest) error
		want error
	}{
		{"source read", func(t *testing.T, ctx context.Context, r *repo.Repository, _ *faulty.Backend, _ *format.Manifest) error {
			_, err := r.Backup(ctx, &failingSource{&repotest.Source{Data: data}, 17 * testChunk}, repo.BackupOptions{SourceName: "x", NoParent: true})
			return err
		}, errBoom},
		// Only the changed page is read, by the delta path.
		{"delta source read", func(t *testing.T, ctx context.Context, r *repo.Repository, _ *faulty.Backend, parent *format.Manifest) error {
			pid := parent.ID
			_, err := r.Backup(ctx, &failingSource{&repotest.Source{Data: changed}, 10*testChunk + 4096}, repo.BackupOptions{SourceName: "p", Parent: &pid, Delta: true,
				Changed: &extents.List{Size: int64(len(changed)), Extents: []cairn.Extent{{Offset: 10*testChunk + 4096, Length: 4096}}}})
			return err
		}, errBoom},
		{"chunk upload", func(t *testing.T, ctx context.Context, r *repo.Repository, be *faulty.Backend, _ *format.Manifest) error {
			be.SetOptions(faulty.Options{Prefix: format.ChunksPrefix, FailRate: 1})
			defer be.SetOptions(faulty.Options{})
			_, err := r.Backup(ctx, &repotest.Source{Data: randomChunks(31, 8)}, repo.BackupOptions{SourceName: "x", NoParent: true})
			return err
		}, faulty.ErrInjected},
		{"cancelled backup", func(t *testing.T, ctx context.Context, r *repo.Repository, _ *faulty.Backend, _ *format.Manifest) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			src := &repotest.Source{Data: data, Block: func(off int64) {
				if off == 12*testChunk {
					cancel()
				}
			}}
			_, err := r.Backup(ctx, src, repo.BackupOptions{SourceName: "x", NoParent: true})
			return err
		}, context.Canceled},
		{"target write", func(t *testing.T, ctx context.Context, r *repo.Repository, _ *faulty.Backend, parent *format.Manifest) error {
			_, err := r.Restore(ctx, parent, &failingTarget{repotest.NewTarget(parent.Size), -1, 13 * testChunk}, nil)
			return err
		}, errBoom},
		{"target read in a delta restore", func(t *testing.T, ctx context.Context, r *repo.Repository, _ *faulty.Backend, parent *format.Manifest) error {
			tgt := &repotest.Target{Data: make([]byte, parent.Size)}
			_, err := r.Restore(ctx, parent, &failingTarget{tgt, 9 * testChunk, -1}, nil)
			return err
		}, errBoom},
		{"chunk fetch", func(t *testing.T, ctx context.Context, r *repo.Repository, be *faulty.Backend, parent *format.Manifest) error {
			be.SetOptions(faulty.Options{Prefix: format.ChunksPrefix, FailRate: 1})
			defer be.SetOptions(faulty.Options{})
			_, err := r.Restore(ctx, parent, repotest.NewTarget(parent.Size), nil)
			return err
		}, faulty.ErrInjected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := faulty.New(mem.New(mem.Options{}), faulty.Options{})
			r := initRepo(t, be)
			parent := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "p"})
			err := tc.run(t, t.Context(), r, be, parent)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			list, err := r.Backups(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Backups) != 1 {
				t.Fatalf("%d backups after a failed one, want the first only", len(list.Backups))
			}
		})
	}
}
