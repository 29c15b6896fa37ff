package servicetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volbackup"
	"github.com/cairnproject/cairn/internal/volume"
)

// mib is the suites' unit of volume size: small volumes keep them fast
// on a real engine and repository.
const mib = int64(1) << 20

// RunEngine runs the conformance suite of service.Engine; open returns a
// new, empty engine for each test.
func RunEngine(t *testing.T, open func(t *testing.T) service.Engine) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e service.Engine)
	}{
		{"Empty", testEngineEmpty},
		{"CreateVolume", testCreateVolume},
		{"SnapshotAndClone", testSnapshotAndClone},
		{"Extend", testExtend},
		{"Revert", testRevert},
		{"Delete", testDelete},
		{"Missing", testMissing},
		{"Devices", testDevices},
		{"Exports", testExports},
		{"Concurrent", testEngineConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: %v, want an error wrapping %v", what, err, target)
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// write writes p at off into volume id through a device of its own.
func write(t *testing.T, e service.Engine, id cairn.ID, off int64, p []byte) {
	t.Helper()
	ctx := t.Context()
	dev := must[service.Device](t, "open volume")(e.OpenVolume(ctx, id))
	mustDo(t, "write", dev.WriteAt(ctx, p, off))
	mustDo(t, "flush", dev.Flush(ctx))
	mustDo(t, "close", dev.Close())
}

// read reads n bytes at off of volume id.
func read(t *testing.T, e service.Engine, id cairn.ID, off, n int64) []byte {
	t.Helper()
	ctx := t.Context()
	dev := must[service.Device](t, "open volume")(e.OpenVolume(ctx, id))
	defer dev.Close()
	p := make([]byte, n)
	mustDo(t, "read", dev.ReadAt(ctx, p, off))
	return p
}

// pattern is n reproducible bytes.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// writes are the test data: unaligned, crossing pages, at both ends.
func writes(seed uint64, size int64) map[int64][]byte {
	return map[int64][]byte{
		0:                 pattern(seed, 5000),
		3*mib + 123:       pattern(seed+1, 70000),
		size - 4096 - 100: pattern(seed+2, 4196),
	}
}

func writeAll(t *testing.T, e service.Engine, id cairn.ID, w map[int64][]byte) {
	t.Helper()
	for off, p := range w {
		write(t, e, id, off, p)
	}
}

// image is what a volume of size holds after w, on a zero volume.
func image(size int64, ws ...map[int64][]byte) []byte {
	img := make([]byte, size)
	for _, w := range ws {
		for _, off := range slices.Sorted(maps.Keys(w)) {
			copy(img[off:], w[off])
		}
	}
	return img
}

func testEngineEmpty(t *testing.T, e service.Engine) {
	ctx := t.Context()
	if v := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx)); len(v) != 0 {
		t.Errorf("a new engine has volumes: %+v", v)
	}
	if s := must[[]volume.SnapshotInfo](t, "snapshots")(e.Snapshots(ctx)); len(s) != 0 {
		t.Errorf("a new engine has snapshots: %+v", s)
	}
}

func testCreateVolume(t *testing.T, e service.Engine) {
	ctx := t.Context()
	a := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "a", 8*mib))
	if a.Name != "a" || a.Size != 8*mib || a.ID.IsZero() || a.Created.IsZero() {
		t.Errorf("created %+v", a)
	}
	b := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "b", 4*mib))
	list := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx))
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID || list[0].Name != "a" || list[1].Size != 4*mib {
		t.Errorf("volumes, oldest first: %+v", list)
	}
	if got := read(t, e, a.ID, 0, 8*mib); !bytes.Equal(got, make([]byte, 8*mib)) {
		t.Error("a new volume does not read as zeros")
	}
	for _, size := range []int64{0, -4096, 1000} {
		_, err := e.CreateVolume(ctx, "bad", size)
		wantErr(t, fmt.Sprintf("create of %d bytes", size), err, cairn.ErrInvalid)
	}
}

func testSnapshotAndClone(t *testing.T, e service.Engine) {
	ctx := t.Context()
	const size = 8 * mib
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", size))
	before := writes(1, size)
	writeAll(t, e, v.ID, before)
	s := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s"))
	if s.Volume != v.ID || s.Name != "s" || s.Size != size || s.ID.IsZero() || s.Created.IsZero() {
		t.Errorf("snapshot %+v", s)
	}
	after := writes(2, size)
	writeAll(t, e, v.ID, after)
	c := must[volume.VolumeInfo](t, "clone")(e.CloneVolume(ctx, "c", s.ID))
	if c.Name != "c" || c.Size != size {
		t.Errorf("clone %+v", c)
	}
	if !bytes.Equal(read(t, e, c.ID, 0, size), image(size, before)) {
		t.Error("the clone does not hold the snapshot's data")
	}
	if !bytes.Equal(read(t, e, v.ID, 0, size), image(size, before, after)) {
		t.Error("the volume lost writes made after its snapshot")
	}
	// The clone is a volume of its own.
	write(t, e, c.ID, 0, pattern(9, 4096))
	s2 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s2"))
	snaps := must[[]volume.SnapshotInfo](t, "snapshots")(e.Snapshots(ctx))
	if len(snaps) != 2 || snaps[0].ID != s.ID || snaps[1].ID != s2.ID {
		t.Errorf("snapshots, oldest first: %+v", snaps)
	}
	c2 := must[volume.VolumeInfo](t, "clone")(e.CloneVolume(ctx, "c2", s2.ID))
	if !bytes.Equal(read(t, e, c2.ID, 0, size), image(size, before, after)) {
		t.Error("the second snapshot does not hold the volume's data")
	}
}

// testRevert: a volume reverted to one of its snapshots holds the
// snapshot's data and size, keeps its snapshots (the later one too), and
// can be reverted to the later one again; another volume's snapshot, a
// missing one and an open volume are refused.
func testRevert(t *testing.T, e service.Engine) {
	ctx := t.Context()
	const size = 4 * mib
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", size))
	before := writes(5, size)
	writeAll(t, e, v.ID, before)
	s1 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s1"))
	mustDo(t, "extend", e.ExtendVolume(ctx, v.ID, 2*size))
	after := writes(6, 2*size)
	writeAll(t, e, v.ID, after)
	s2 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s2"))
	write(t, e, v.ID, 0, pattern(7, 4096))

	mustDo(t, "revert", e.RevertVolume(ctx, v.ID, s1.ID))
	list := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx))
	if len(list) != 1 || list[0].Size != size {
		t.Errorf("after a revert to a smaller snapshot: %+v", list)
	}
	if !bytes.Equal(read(t, e, v.ID, 0, size), image(size, before)) {
		t.Error("a reverted volume does not hold its snapshot's data")
	}
	if snaps := must[[]volume.SnapshotInfo](t, "snapshots")(e.Snapshots(ctx)); len(snaps) != 2 {
		t.Errorf("snapshots after a revert: %+v", snaps)
	}
	mustDo(t, "revert to the later snapshot", e.RevertVolume(ctx, v.ID, s2.ID))
	if !bytes.Equal(read(t, e, v.ID, 0, 2*size), image(2*size, before, after)) {
		t.Error("a volume reverted to its later snapshot does not hold that snapshot's data")
	}

	other := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "o", size))
	wantErr(t, "revert to another volume's snapshot", e.RevertVolume(ctx, other.ID, s1.ID), cairn.ErrNotFound)
	wantErr(t, "revert to a missing snapshot", e.RevertVolume(ctx, v.ID, cairn.NewID()), cairn.ErrNotFound)
	wantErr(t, "revert a missing volume", e.RevertVolume(ctx, cairn.NewID(), s1.ID), cairn.ErrNotFound)
	dev := must[service.Device](t, "open")(e.OpenVolume(ctx, v.ID))
	wantErr(t, "revert an open volume", e.RevertVolume(ctx, v.ID, s1.ID), cairn.ErrConflict)
	mustDo(t, "close", dev.Close())
}

func testExtend(t *testing.T, e service.Engine) {
	ctx := t.Context()
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", 4*mib))
	w := writes(3, 4*mib)
	writeAll(t, e, v.ID, w)
	mustDo(t, "extend", e.ExtendVolume(ctx, v.ID, 8*mib))
	list := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx))
	if len(list) != 1 || list[0].Size != 8*mib {
		t.Errorf("after extend: %+v", list)
	}
	if !bytes.Equal(read(t, e, v.ID, 0, 8*mib), image(8*mib, w)) {
		t.Error("an extended volume does not hold its data followed by zeros")
	}
	wantErr(t, "shrink", e.ExtendVolume(ctx, v.ID, 4*mib), cairn.ErrInvalid)
	wantErr(t, "extend to the same size", e.ExtendVolume(ctx, v.ID, 8*mib), cairn.ErrInvalid)
	wantErr(t, "extend a missing volume", e.ExtendVolume(ctx, cairn.NewID(), 16*mib), cairn.ErrNotFound)
}

func testDelete(t *testing.T, e service.Engine) {
	ctx := t.Context()
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", 4*mib))
	w := writes(4, 4*mib)
	writeAll(t, e, v.ID, w)
	s := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s"))
	c := must[volume.VolumeInfo](t, "clone")(e.CloneVolume(ctx, "c", s.ID))
	wantErr(t, "delete a volume with a snapshot", e.DeleteVolume(ctx, v.ID), cairn.ErrConflict)
	mustDo(t, "delete snapshot", e.DeleteSnapshot(ctx, s.ID))
	wantErr(t, "delete a deleted snapshot", e.DeleteSnapshot(ctx, s.ID), cairn.ErrNotFound)
	if snaps := must[[]volume.SnapshotInfo](t, "snapshots")(e.Snapshots(ctx)); len(snaps) != 0 {
		t.Errorf("snapshots after delete: %+v", snaps)
	}
	if !bytes.Equal(read(t, e, c.ID, 0, 4*mib), image(4*mib, w)) {
		t.Error("a clone lost its data when its snapshot was deleted")
	}
	dev := must[service.Device](t, "open")(e.OpenVolume(ctx, v.ID))
	wantErr(t, "delete an open volume", e.DeleteVolume(ctx, v.ID), cairn.ErrConflict)
	mustDo(t, "close", dev.Close())
	mustDo(t, "delete volume", e.DeleteVolume(ctx, v.ID))
	wantErr(t, "delete a deleted volume", e.DeleteVolume(ctx, v.ID), cairn.ErrNotFound)
	list := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx))
	if len(list) != 1 || list[0].ID != c.ID {
		t.Errorf("volumes after delete: %+v", list)
	}
}

func testMissing(t *testing.T, e service.Engine) {
	ctx := t.Context()
	_, err := e.CloneVolume(ctx, "x", cairn.NewID())
	wantErr(t, "clone a missing snapshot", err, cairn.ErrNotFound)
	_, err = e.CreateSnapshot(ctx, cairn.NewID(), "x")
	wantErr(t, "snapshot a missing volume", err, cairn.ErrNotFound)
	_, err = e.OpenVolume(ctx, cairn.NewID())
	wantErr(t, "open a missing volume", err, cairn.ErrNotFound)
	wantErr(t, "delete a missing volume", e.DeleteVolume(ctx, cairn.NewID()), cairn.ErrNotFound)
	wantErr(t, "delete a missing snapshot", e.DeleteSnapshot(ctx, cairn.NewID()), cairn.ErrNotFound)
}

// testDevices: devices of one volume see each other's writes; Zero
// zeros; a snapshot holds what devices wrote before it.
func testDevices(t *testing.T, e service.Engine) {
	ctx := t.Context()
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", 4*mib))
	d1 := must[service.Device](t, "open")(e.OpenVolume(ctx, v.ID))
	d2 := must[service.Device](t, "open")(e.OpenVolume(ctx, v.ID))
	if d1.Size() != 4*mib || d1.ReadOnly() {
		t.Errorf("device size %d, read-only %v", d1.Size(), d1.ReadOnly())
	}
	p := pattern(5, 3*4096)
	mustDo(t, "write", d1.WriteAt(ctx, p, 4096))
	got := make([]byte, len(p))
	mustDo(t, "read", d2.ReadAt(ctx, got, 4096))
	if !bytes.Equal(got, p) {
		t.Error("a device does not see another's completed write")
	}
	mustDo(t, "zero", d2.Zero(ctx, 2*4096, 4096, false))
	mustDo(t, "flush", d2.Flush(ctx))
	checkBlockStatus(t, d1, []int64{4096, 3 * 4096})
	want := slices.Clone(p)
	clear(want[4096 : 2*4096])
	s := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s"))
	mustDo(t, "close", d1.Close())
	mustDo(t, "close", d2.Close())
	c := must[volume.VolumeInfo](t, "clone")(e.CloneVolume(ctx, "c", s.ID))
	if !bytes.Equal(read(t, e, c.ID, 4096, int64(len(want))), want) {
		t.Error("the snapshot does not hold what the devices wrote and zeroed")
	}
	if !bytes.Equal(read(t, e, v.ID, 4096, int64(len(want))), want) {
		t.Error("the volume does not hold what the devices wrote and zeroed")
	}
}

// testExports: exports are set, replaced, listed and removed; a missing
// volume cannot be exported.
func testExports(t *testing.T, e service.Engine) {
	ctx := t.Context()
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", 4*mib))
	w := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "w", 4*mib))
	if m := must[map[string]cairn.ID](t, "exported")(e.Exported(ctx)); len(m) != 0 {
		t.Errorf("exports of a new engine: %v", m)
	}
	mustDo(t, "export", e.Export(ctx, "a", v.ID))
	mustDo(t, "export", e.Export(ctx, "b", v.ID))
	mustDo(t, "export again", e.Export(ctx, "a", w.ID))
	wantErr(t, "export of a missing volume", e.Export(ctx, "c", cairn.NewID()), cairn.ErrNotFound)
	m := must[map[string]cairn.ID](t, "exported")(e.Exported(ctx))
	if len(m) != 2 || m["a"] != w.ID || m["b"] != v.ID {
		t.Errorf("exports %v, want a -> %s, b -> %s", m, w.ID.Short(), v.ID.Short())
	}
	mustDo(t, "unexport", e.Unexport(ctx, "a"))
	mustDo(t, "unexport what is not exported", e.Unexport(ctx, "a"))
	if m := must[map[string]cairn.ID](t, "exported")(e.Exported(ctx)); len(m) != 1 || m["b"] != v.ID {
		t.Errorf("exports after unexport: %v", m)
	}
}

// checkBlockStatus checks d's block status over the whole device: the
// extents cover it, those said to read as zeros do, and none of them
// overlaps a page of data (pages are page offsets written with non-zero
// bytes).
func checkBlockStatus(t *testing.T, d service.Device, pages []int64) {
	t.Helper()
	ctx := t.Context()
	size := d.Size()
	for off := int64(0); off < size; {
		list := must[[]nbd.Extent](t, "block status")(d.BlockStatus(ctx, off, size-off))
		if len(list) == 0 {
			t.Fatalf("block status at %d: no extents", off)
		}
		for _, e := range list {
			if e.Length <= 0 || off+e.Length > size {
				t.Fatalf("block status at %d: extent of %d bytes in a device of %d", off, e.Length, size)
			}
			if e.Zero {
				got := make([]byte, e.Length)
				mustDo(t, "read", d.ReadAt(ctx, got, off))
				if !isZero(got) {
					t.Errorf("block status: [%d, %d) said to read as zeros does not", off, off+e.Length)
				}
				for _, pg := range pages {
					if pg < off+e.Length && off < pg+4096 {
						t.Errorf("block status: [%d, %d) said to read as zeros holds the data at %d", off, off+e.Length, pg)
					}
				}
			}
			off += e.Length
		}
	}
}

func isZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

func testEngineConcurrent(t *testing.T, e service.Engine) {
	ctx := t.Context()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			v, err := e.CreateVolume(ctx, fmt.Sprintf("v%d", i), 4*mib)
			if err != nil {
				errs <- err
				return
			}
			if _, err := e.CreateSnapshot(ctx, v.ID, fmt.Sprintf("s%d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	vols := must[[]volume.VolumeInfo](t, "volumes")(e.Volumes(ctx))
	snaps := must[[]volume.SnapshotInfo](t, "snapshots")(e.Snapshots(ctx))
	if len(vols) != n || len(snaps) != n {
		t.Errorf("%d volumes and %d snapshots made at once; listed %d and %d", n, n, len(vols), len(snaps))
	}
}

// RunRepository runs the conformance suite of service.Repository; open
// returns, for each test, a new empty engine and a new empty repository
// bound to it.
func RunRepository(t *testing.T, open func(t *testing.T) (service.Engine, service.Repository)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e service.Engine, r service.Repository)
	}{
		{"BackupRestore", testBackupRestore},
		{"Incremental", testIncremental},
		{"ForgetGC", testForgetGC},
		{"Missing", testRepoMissing},
		{"Concurrent", testRepoConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, r := open(t)
			tc.fn(t, e, r)
			mustDo(t, "close", r.Close())
		})
	}
}

// restore restores backup id into a volume: a new one (fresh), or one
// holding other data.
func restore(t *testing.T, e service.Engine, r service.Repository, id cairn.ID, fresh bool, size int64) []byte {
	t.Helper()
	ctx := t.Context()
	m := must[*format.Manifest](t, "manifest")(r.Manifest(ctx, id))
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "restored", size))
	if !fresh {
		writeAll(t, e, v.ID, writes(99, size))
	}
	dev := must[service.Device](t, "open")(e.OpenVolume(ctx, v.ID))
	var p repo.Progress
	st, err := r.Restore(ctx, m, service.DeviceTarget(ctx, dev, fresh), &p)
	mustDo(t, "restore", err)
	mustDo(t, "close", dev.Close())
	if st.Bytes != m.Size || p.Done.Load() != m.Size || p.Total.Load() != m.Size {
		t.Errorf("restore of %d bytes: stats %+v, progress %d/%d", m.Size, st, p.Done.Load(), p.Total.Load())
	}
	return read(t, e, v.ID, 0, m.Size)
}

func testBackupRestore(t *testing.T, e service.Engine, r service.Repository) {
	ctx := t.Context()
	const size = 8 * mib
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", size))
	w := writes(10, size)
	writeAll(t, e, v.ID, w)
	s := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s"))
	dataTime := s.Created.Add(-time.Hour).UTC()
	var p repo.Progress
	res := must[*volbackup.Result](t, "backup")(r.BackupSnapshot(ctx, s.ID, repo.BackupOptions{
		Tags: map[string]string{"who": "suite"}, DataTime: dataTime, NoParent: true, Progress: &p}))
	m := res.Manifest
	if m == nil || m.ID.IsZero() || m.Size != size || !m.DataTime.Equal(dataTime) || m.Parent != nil || res.Tracked || res.Reason == "" {
		t.Fatalf("backup result %+v, manifest %+v", res, m)
	}
	if m.Tags["who"] != "suite" || m.Tags[volbackup.TagSnapshot] != s.ID.String() || m.Tags[volbackup.TagVolume] != v.ID.String() {
		t.Errorf("manifest tags %v", m.Tags)
	}
	if p.Total.Load() != size || p.Done.Load() != size {
		t.Errorf("backup progress %d/%d, want %d", p.Done.Load(), p.Total.Load(), size)
	}
	list := must[*repo.BackupList](t, "backups")(r.Backups(ctx))
	if len(list.Backups) != 1 || list.Backups[0].ID != m.ID || list.Backups[0].Tags["who"] != "suite" || len(list.Damaged) != 0 {
		t.Errorf("backups: %+v", list)
	}
	got := must[*format.Manifest](t, "manifest")(r.Manifest(ctx, m.ID))
	if got.ID != m.ID || got.Size != m.Size || !got.DataTime.Equal(m.DataTime) || got.Tags["who"] != "suite" {
		t.Errorf("manifest read back %+v, want %+v", got, m)
	}
	// Writes after the snapshot are not in its backup.
	writeAll(t, e, v.ID, writes(11, size))
	want := image(size, w)
	for _, fresh := range []bool{true, false} {
		if !bytes.Equal(restore(t, e, r, m.ID, fresh, size), want) {
			t.Errorf("restore (fresh target %v) differs from the snapshot", fresh)
		}
	}
	// Into a larger volume, the first bytes are the backup's.
	if !bytes.Equal(restore(t, e, r, m.ID, false, 2*size), want) {
		t.Error("restore into a larger volume differs from the snapshot")
	}
}

func testIncremental(t *testing.T, e service.Engine, r service.Repository) {
	ctx := t.Context()
	const size = 8 * mib
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", size))
	w1 := writes(20, size)
	writeAll(t, e, v.ID, w1)
	s1 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s1"))
	full := must[*volbackup.Result](t, "full")(r.BackupSnapshot(ctx, s1.ID, repo.BackupOptions{NoParent: true}))
	w2 := map[int64][]byte{5 * mib: pattern(21, 8192)}
	writeAll(t, e, v.ID, w2)
	s2 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s2"))
	parent := full.Manifest.ID
	inc := must[*volbackup.Result](t, "incremental")(r.BackupSnapshot(ctx, s2.ID, repo.BackupOptions{Parent: &parent}))
	if inc.Manifest.Parent == nil || *inc.Manifest.Parent != parent {
		t.Errorf("incremental's parent %v, want %v", inc.Manifest.Parent, parent)
	}
	if !inc.Tracked || inc.ChangedBytes <= 0 || inc.ChangedBytes > 64<<10 {
		t.Errorf("incremental with the parent's snapshot: tracked %v, %d bytes changed (%s)", inc.Tracked, inc.ChangedBytes, inc.Reason)
	}
	if !bytes.Equal(restore(t, e, r, inc.Manifest.ID, true, size), image(size, w1, w2)) {
		t.Error("the incremental's restore differs from its snapshot")
	}
	// Without the parent's snapshot, the source is read whole.
	mustDo(t, "delete snapshot", e.DeleteSnapshot(ctx, s1.ID))
	s3 := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s3"))
	again := must[*volbackup.Result](t, "incremental")(r.BackupSnapshot(ctx, s3.ID, repo.BackupOptions{Parent: &parent}))
	if again.Tracked || again.Reason == "" {
		t.Errorf("incremental without the parent's snapshot: tracked %v, reason %q", again.Tracked, again.Reason)
	}
	missing := cairn.NewID()
	_, err := r.BackupSnapshot(ctx, s3.ID, repo.BackupOptions{Parent: &missing})
	wantErr(t, "backup with a missing parent", err, cairn.ErrNotFound)
}

func testForgetGC(t *testing.T, e service.Engine, r service.Repository) {
	ctx := t.Context()
	const size = 4 * mib
	v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, "v", size))
	w := writes(30, size)
	writeAll(t, e, v.ID, w)
	s := must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s"))
	a := must[*volbackup.Result](t, "backup")(r.BackupSnapshot(ctx, s.ID, repo.BackupOptions{NoParent: true, Tags: map[string]string{"n": "a"}}))
	b := must[*volbackup.Result](t, "backup")(r.BackupSnapshot(ctx, s.ID, repo.BackupOptions{NoParent: true, Tags: map[string]string{"n": "b"}}))
	mustDo(t, "forget", r.Forget(ctx, []cairn.ID{a.Manifest.ID}))
	_, err := r.Manifest(ctx, a.Manifest.ID)
	wantErr(t, "manifest of a forgotten backup", err, cairn.ErrNotFound)
	wantErr(t, "forget twice", r.Forget(ctx, []cairn.ID{a.Manifest.ID}), cairn.ErrNotFound)
	list := must[*repo.BackupList](t, "backups")(r.Backups(ctx))
	if len(list.Backups) != 1 || list.Backups[0].ID != b.Manifest.ID {
		t.Errorf("backups after forget: %+v", list.Backups)
	}
	must[repo.GCStats](t, "gc")(r.GC(ctx, repo.GCOptions{}))
	if !bytes.Equal(restore(t, e, r, b.Manifest.ID, true, size), image(size, w)) {
		t.Error("a backup sharing all its data with a forgotten one does not restore after GC")
	}
}

func testRepoMissing(t *testing.T, e service.Engine, r service.Repository) {
	ctx := t.Context()
	_, err := r.BackupSnapshot(ctx, cairn.NewID(), repo.BackupOptions{NoParent: true})
	wantErr(t, "backup of a missing snapshot", err, cairn.ErrNotFound)
	_, err = r.Manifest(ctx, cairn.NewID())
	wantErr(t, "missing manifest", err, cairn.ErrNotFound)
	wantErr(t, "forget a missing backup", r.Forget(ctx, []cairn.ID{cairn.NewID()}), cairn.ErrNotFound)
	list := must[*repo.BackupList](t, "backups")(r.Backups(ctx))
	if len(list.Backups) != 0 {
		t.Errorf("backups of an empty repository: %+v", list.Backups)
	}
}

func testRepoConcurrent(t *testing.T, e service.Engine, r service.Repository) {
	ctx := t.Context()
	const n = 4
	var snaps []volume.SnapshotInfo
	for i := range n {
		v := must[volume.VolumeInfo](t, "create")(e.CreateVolume(ctx, fmt.Sprintf("v%d", i), 4*mib))
		write(t, e, v.ID, int64(i)*4096, pattern(uint64(40+i), 4096))
		snaps = append(snaps, must[volume.SnapshotInfo](t, "snapshot")(e.CreateSnapshot(ctx, v.ID, "s")))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, s := range snaps {
		wg.Go(func() {
			if _, err := r.BackupSnapshot(ctx, s.ID, repo.BackupOptions{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list := must[*repo.BackupList](t, "backups")(r.Backups(ctx))
	if len(list.Backups) != n {
		t.Errorf("%d backups made at once; %d listed", n, len(list.Backups))
	}
}
