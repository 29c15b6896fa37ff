package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cairnproject/cairn"
)

func openEngine(t *testing.T, dir string) *Engine {
	t.Helper()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// newVolume creates a volume named v of size bytes and opens it; the
// caller closes the device.
func newVolume(t testing.TB, e *Engine, size int64) (VolumeInfo, *Device) {
	t.Helper()
	v, err := e.CreateVolume(t.Context(), "v", size)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v, d
}

func readAll(t *testing.T, d *Device) []byte {
	t.Helper()
	buf := make([]byte, d.Size())
	if err := d.ReadAt(t.Context(), buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

// readPieces reads the whole device in consecutive reads of random
// lengths, from one byte to several blocks, most starting and ending
// inside a block, each into a buffer that held other bytes before.
func readPieces(t *testing.T, d *Device, r *rand.Rand) []byte {
	t.Helper()
	out := make([]byte, 0, d.Size())
	for off := int64(0); off < d.Size(); {
		n := min(d.Size()-off, 1+r.Int64N(5*BlockSize))
		buf := bytes.Repeat([]byte{0xee}, int(n))
		if err := d.ReadAt(t.Context(), buf, off); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf...)
		off += n
	}
	return out
}

func TestBasicIO(t *testing.T) {
	e := openEngine(t, t.TempDir())
	ctx := t.Context()
	_, d := newVolume(t, e, 1<<20)
	defer d.Close()
	want := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		off := r.Int64N(1 << 20)
		n := 1 + r.Int64N(min(70000, 1<<20-off))
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := d.WriteAt(ctx, data, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], data)
	}
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	for _, bad := range [][2]int64{{-1, 1}, {1 << 20, 1}, {1<<20 - 1, 2}} {
		if err := d.ReadAt(ctx, make([]byte, bad[1]), bad[0]); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("read %v: %v", bad, err)
		}
		if err := d.WriteAt(ctx, make([]byte, bad[1]), bad[0]); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("write %v: %v", bad, err)
		}
	}
}

// TestWaitVolumeClosed: the wait ends when the volume's last device
// closes, at once for a volume not open, and with the context; after it
// the volume deletes.
func TestWaitVolumeClosed(t *testing.T) {
	e := openEngine(t, t.TempDir())
	ctx := t.Context()
	v, err := e.CreateVolume(ctx, "v", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WaitVolumeClosed(ctx, v.ID); err != nil {
		t.Fatalf("wait for a volume not open: %v", err)
	}
	d1, err := e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.WaitVolumeClosed(cctx, v.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- e.WaitVolumeClosed(ctx, v.ID) }()
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		t.Fatalf("the wait ended with a device still open: %v", err)
	default:
	}
	if err := e.DeleteVolume(ctx, v.ID); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("delete while open: %v", err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := e.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatalf("delete after the wait: %v", err)
	}
}

func TestDataDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	openEngine(t, dir)
	if _, err := Open(dir, Options{}); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("second open: %v", err)
	}
}

func TestThinVolume(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir)
	v, err := e.CreateVolume(t.Context(), "big", 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(t.Context(), bytes.Repeat([]byte{1}, 1<<20), 500<<30); err != nil {
		t.Fatal(err)
	}
	d.Close()
	var used int64
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			used += diskUsage(p)
		}
		return nil
	})
	if used > 8<<20 {
		t.Fatalf("a 1 TiB volume with 1 MiB written uses %d bytes on disk", used)
	}
}

// model mirrors an engine's volumes and snapshots in memory.
type model struct {
	vols  map[cairn.ID][]byte
	snaps map[cairn.ID][]byte
	snapV map[cairn.ID]cairn.ID // snapshot -> volume
}

// TestModel applies random operations to the engine and to a model, and
// compares every volume and snapshot after each step. Crashes (abandoning
// the engine without closing it) happen after a flush, so nothing
// acknowledged may be lost.
func TestModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed, 150) })
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	ctx := t.Context()
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close() }()
	r := rand.New(rand.NewPCG(seed, 7))
	fill := rand.NewChaCha8([32]byte{byte(seed), 7})
	m := &model{vols: map[cairn.ID][]byte{}, snaps: map[cairn.ID][]byte{}, snapV: map[cairn.ID]cairn.ID{}}
	devs := map[cairn.ID]*Device{}
	dev := func(id cairn.ID) *Device {
		if d := devs[id]; d != nil {
			return d
		}
		d, err := e.OpenVolume(id)
		if err != nil {
			t.Fatal(err)
		}
		devs[id] = d
		return d
	}
	closeDev := func(id cairn.ID) {
		if d := devs[id]; d != nil {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			delete(devs, id)
		}
	}
	keys := func(mm map[cairn.ID][]byte) []cairn.ID {
		var out []cairn.ID
		for k := range mm {
			out = append(out, k)
		}
		slices.SortFunc(out, func(a, b cairn.ID) int { return bytes.Compare(a[:], b[:]) })
		return out
	}
	pick := func(mm map[cairn.ID][]byte) (cairn.ID, bool) {
		ks := keys(mm)
		if len(ks) == 0 {
			return cairn.ID{}, false
		}
		return ks[r.IntN(len(ks))], true
	}
	const size = 2 << 20
	v, err := e.CreateVolume(ctx, "v0", size)
	if err != nil {
		t.Fatal(err)
	}
	m.vols[v.ID] = make([]byte, size)

	for step := range steps {
		op := r.IntN(100)
		switch {
		case op < 40: // write
			id, _ := pick(m.vols)
			buf := m.vols[id]
			off := r.Int64N(int64(len(buf)))
			n := 1 + r.Int64N(min(int64(len(buf))-off, 300000))
			if r.IntN(3) == 0 { // page aligned
				off = off / PageSize * PageSize
				n = max(PageSize, n/PageSize*PageSize)
				n = min(n, int64(len(buf))-off)
			}
			// Never a zero byte, so a write is never taken for zeros.
			data := make([]byte, n)
			_, _ = fill.Read(data)
			for i := range data {
				data[i] |= 1
			}
			if err := dev(id).WriteAt(ctx, data, off); err != nil {
				t.Fatal(err)
			}
			copy(buf[off:], data)
		case op < 50: // zero or trim
			id, _ := pick(m.vols)
			buf := m.vols[id]
			off := r.Int64N(int64(len(buf)))
			n := 1 + r.Int64N(min(int64(len(buf))-off, 400000))
			var err error
			if r.IntN(2) == 0 {
				err = dev(id).Zero(ctx, off, n, r.IntN(2) == 0)
			} else {
				err = dev(id).Trim(ctx, off, n)
			}
			if err != nil {
				t.Fatal(err)
			}
			clear(buf[off : off+n])
		case op < 62: // snapshot
			id, _ := pick(m.vols)
			s, err := e.CreateSnapshot(ctx, id, fmt.Sprint("s", step))
			if err != nil {
				t.Fatal(err)
			}
			m.snaps[s.ID] = bytes.Clone(m.vols[id])
			m.snapV[s.ID] = id
		case op < 70: // delete a snapshot
			id, ok := pick(m.snaps)
			if !ok {
				continue
			}
			if err := e.DeleteSnapshot(ctx, id); err != nil {
				t.Fatal(err)
			}
			delete(m.snaps, id)
			delete(m.snapV, id)
		case op < 75: // clone
			id, ok := pick(m.snaps)
			if !ok || len(m.vols) > 4 {
				continue
			}
			c, err := e.CloneVolume(ctx, "clone", id)
			if err != nil {
				t.Fatal(err)
			}
			m.vols[c.ID] = bytes.Clone(m.snaps[id])
		case op < 80: // revert
			id, ok := pick(m.snaps)
			if !ok {
				continue
			}
			vol := m.snapV[id]
			closeDev(vol)
			if err := e.RevertVolume(ctx, vol, id); err != nil {
				t.Fatal(err)
			}
			m.vols[vol] = bytes.Clone(m.snaps[id])
		case op < 84: // extend
			id, _ := pick(m.vols)
			grow := int64(1+r.IntN(4)) * 64 << 10
			if err := e.ExtendVolume(ctx, id, int64(len(m.vols[id]))+grow); err != nil {
				t.Fatal(err)
			}
			m.vols[id] = append(m.vols[id], make([]byte, grow)...)
		case op < 88: // delete a volume without snapshots
			id, _ := pick(m.vols)
			if len(m.vols) == 1 {
				continue
			}
			busy := false
			for _, v := range m.snapV {
				busy = busy || v == id
			}
			closeDev(id)
			err := e.DeleteVolume(ctx, id)
			if busy {
				if !errors.Is(err, cairn.ErrConflict) {
					t.Fatalf("deleting a volume with snapshots: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			delete(m.vols, id)
		case op < 93: // close a device
			id, _ := pick(m.vols)
			closeDev(id)
		default: // flush everything, then crash and reopen
			for _, d := range devs {
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			e.crash()
			devs = map[cairn.ID]*Device{}
			if e, err = Open(dir, Options{}); err != nil {
				t.Fatalf("reopen after crash: %v", err)
			}
		}
		// Compare everything after a crash and at the end, otherwise a
		// sample: a volume and two snapshots. Everything is also read in
		// pieces of random lengths then, which start and end inside
		// blocks (readAll's one read starts at a block's start).
		all := op >= 93 || step == steps-1
		for _, id := range keys(m.vols) {
			if !all && r.IntN(len(m.vols)) != 0 {
				continue
			}
			if got := readAll(t, dev(id)); !bytes.Equal(got, m.vols[id]) {
				t.Fatalf("step %d (op %d): volume %s differs from the model at %d", step, op, id.Short(), firstDiff(got, m.vols[id]))
			}
			if !all {
				continue
			}
			if got := readPieces(t, dev(id), rand.New(rand.NewPCG(seed, uint64(step)))); !bytes.Equal(got, m.vols[id]) {
				t.Fatalf("step %d (op %d): volume %s read in pieces differs from the model at %d", step, op, id.Short(), firstDiff(got, m.vols[id]))
			}
		}
		for _, id := range keys(m.snaps) {
			if !all && r.IntN(len(m.snaps)) > 1 {
				continue
			}
			d, err := e.OpenSnapshot(id)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, d)
			var pieces []byte
			if all {
				pieces = readPieces(t, d, rand.New(rand.NewPCG(seed, uint64(step))))
			}
			d.Close()
			if !bytes.Equal(got, m.snaps[id]) {
				t.Fatalf("step %d (op %d): snapshot %s differs from the model at %d", step, op, id.Short(), firstDiff(got, m.snaps[id]))
			}
			if all && !bytes.Equal(pieces, m.snaps[id]) {
				t.Fatalf("step %d (op %d): snapshot %s read in pieces differs from the model at %d", step, op, id.Short(), firstDiff(pieces, m.snaps[id]))
			}
		}
	}
	// Changed extents between every snapshot and its volume cover every
	// difference.
	for sid, vid := range m.snapV {
		list, known, err := e.ChangedExtents(ctx, &Ref{Snapshot: sid}, Ref{Volume: vid})
		if err != nil || !known {
			t.Fatalf("changed extents: %v known %v", err, known)
		}
		checkCovers(t, m.snaps[sid], m.vols[vid], list)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkCovers fails unless every byte of b that differs from a lies in
// list. Bytes past b's end are not b's: a change of size is reported by
// the sizes, not by extents.
func checkCovers(t *testing.T, a, b []byte, list []cairn.Extent) {
	t.Helper()
	n := len(b) // bytes past the end of b are not part of it
	at := func(buf []byte, lo, hi int) []byte {
		lo, hi = min(lo, len(buf)), min(hi, len(buf))
		return buf[lo:hi]
	}
	for lo := 0; lo < n; lo += PageSize {
		hi := min(lo+PageSize, n)
		x, y := at(a, lo, hi), at(b, lo, hi)
		if len(x) == len(y) && bytes.Equal(x, y) {
			continue
		}
		for i := lo; i < hi; i++ {
			var p, q byte
			if i < len(a) {
				p = a[i]
			}
			if i < len(b) {
				q = b[i]
			}
			if p == q {
				continue
			}
			k, _ := slices.BinarySearchFunc(list, int64(i), func(e cairn.Extent, off int64) int {
				switch {
				case e.End() <= off:
					return -1
				case e.Offset > off:
					return 1
				}
				return 0
			})
			if k >= len(list) || int64(i) < list[k].Offset || int64(i) >= list[k].End() {
				t.Fatalf("byte %d differs but no changed extent covers it (len a %d b %d, sorted %v): %v", i, len(a), len(b), slices.IsSortedFunc(list, func(x, y cairn.Extent) int { return int(x.Offset - y.Offset) }), list)
			}
		}
	}
}

func diskUsage(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return blocksUsed(st)
}

// TestModelLong runs the model longer, so that chains of snapshots,
// clones and reverts grow deep. One seed: with the race detector on a
// busy machine, two took more than ten minutes.
func TestModelLong(t *testing.T) {
	runModel(t, 100, 400)
}

// TestChangedExtentsGroundTruth writes random extents between snapshots
// and compares the engine's changed extents with the truth: exactly the
// written pages, covering every byte that really differs; across several
// snapshots, after snapshots in between are deleted, and against the live
// volume; and after a restart.
func TestChangedExtentsGroundTruth(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	e := openEngine(t, dir)
	const size = 32 << 20
	v, d := newVolume(t, e, size)
	r := rand.New(rand.NewPCG(11, 12))
	fill := rand.NewChaCha8([32]byte{11})
	content := make([]byte, size)
	var snaps []cairn.ID
	var contents [][]byte
	var written [][]cairn.Extent // pages written after snapshot i
	writeRandom := func() []cairn.Extent {
		var pages []cairn.Extent
		for range 40 {
			off := r.Int64N(size - 300000)
			n := 1 + r.Int64N(200000)
			data := make([]byte, n)
			fill.Read(data)
			if err := d.WriteAt(ctx, data, off); err != nil {
				t.Fatal(err)
			}
			copy(content[off:], data)
			lo := off / PageSize * PageSize
			hi := (off + n + PageSize - 1) / PageSize * PageSize
			pages = append(pages, cairn.Extent{Offset: lo, Length: hi - lo})
		}
		return pages
	}
	for range 4 {
		s, err := e.CreateSnapshot(ctx, v.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s.ID)
		contents = append(contents, bytes.Clone(content))
		written = append(written, writeRandom())
	}
	union := func(from int) []cairn.Extent {
		var all []cairn.Extent
		for _, w := range written[from:] {
			all = append(all, w...)
		}
		return normalize(all)
	}
	check := func(from int, to Ref, toContent []byte, wantUnion []cairn.Extent) {
		t.Helper()
		list, known, err := e.ChangedExtents(ctx, &Ref{Snapshot: snaps[from]}, to)
		if err != nil || !known {
			t.Fatalf("changed extents: %v %v", err, known)
		}
		if fmt.Sprint(list) != fmt.Sprint(wantUnion) {
			t.Fatalf("from snapshot %d: got %d extents, want %d\ngot  %v\nwant %v", from, len(list), len(wantUnion), list, wantUnion)
		}
		checkCovers(t, contents[from], toContent, list)
	}
	// Snapshot i to snapshot j: the pages written in between.
	for i := range snaps {
		for j := i + 1; j < len(snaps); j++ {
			var all []cairn.Extent
			for _, w := range written[i:j] {
				all = append(all, w...)
			}
			check(i, Ref{Snapshot: snaps[j]}, contents[j], normalize(all))
		}
		check(i, Ref{Volume: v.ID}, content, union(i))
	}
	// Deleting snapshots in between merges their layers; the answer for
	// the ones left is unchanged.
	for _, k := range []int{2, 1} {
		if err := e.DeleteSnapshot(ctx, snaps[k]); err != nil {
			t.Fatal(err)
		}
	}
	check(0, Ref{Snapshot: snaps[3]}, contents[3], normalize(append(append(append([]cairn.Extent{}, written[0]...), written[1]...), written[2]...)))
	check(0, Ref{Volume: v.ID}, content, union(0))
	// And after a restart.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	check(0, Ref{Volume: v.ID}, content, union(0))
	check(3, Ref{Volume: v.ID}, content, union(3))
}

// normalize sorts and merges extents.
func normalize(in []cairn.Extent) []cairn.Extent {
	slices.SortFunc(in, func(a, b cairn.Extent) int { return int(a.Offset - b.Offset) })
	var out []cairn.Extent
	for _, e := range in {
		if k := len(out); k > 0 && e.Offset <= out[k-1].End() {
			out[k-1].Length = max(out[k-1].End(), e.End()) - out[k-1].Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

// TestSnapshotAllocatedSkipsHoles: a snapshot's source leaves out the
// blocks trimmed before it was taken, which read as zeros, and keeps the
// blocks that hold data; the live volume's source keeps every block its
// layers own.
func TestSnapshotAllocatedSkipsHoles(t *testing.T) {
	e := openEngine(t, t.TempDir())
	ctx := t.Context()
	v, d := newVolume(t, e, 64*BlockSize)
	defer d.Close()
	data := bytes.Repeat([]byte{7}, 16*BlockSize)
	if err := d.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	// Blocks 4 to 11 trimmed whole; half of block 13 trimmed.
	if err := d.Trim(ctx, 4*BlockSize, 8*BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(ctx, 13*BlockSize, BlockSize/2); err != nil {
		t.Fatal(err)
	}
	s, err := e.CreateSnapshot(ctx, v.ID, "s")
	if err != nil {
		t.Fatal(err)
	}
	sd, err := e.OpenSnapshot(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	got, ok, err := sd.Source().Allocated()
	if err != nil || !ok {
		t.Fatalf("allocated: %v %v", ok, err)
	}
	want := []cairn.Extent{{Offset: 0, Length: 4 * BlockSize}, {Offset: 12 * BlockSize, Length: 4 * BlockSize}}
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot allocated %v, want %v", got, want)
	}
	// What is left out reads as zeros; what is kept reads as written.
	img := readAll(t, sd)
	wantImg := make([]byte, len(img))
	copy(wantImg, data)
	clear(wantImg[4*BlockSize : 12*BlockSize])
	clear(wantImg[13*BlockSize : 13*BlockSize+BlockSize/2])
	if !bytes.Equal(img, wantImg) {
		t.Fatal("snapshot content differs")
	}
	live, _, err := d.Source().Allocated()
	if err != nil {
		t.Fatal(err)
	}
	if want := []cairn.Extent{{Offset: 0, Length: 16 * BlockSize}}; !slices.Equal(live, want) {
		t.Fatalf("volume allocated %v, want %v", live, want)
	}
}

// TestStartWriteback: starting writeback as a volume is written changes
// nothing it reads, before or after a snapshot moves the head, or after
// the engine is reopened; a snapshot refuses it.
func TestStartWriteback(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir)
	ctx := t.Context()
	const size = 4 << 20
	v, d := newVolume(t, e, size)
	want := make([]byte, size)
	r := rand.New(rand.NewPCG(2, 2))
	var snap cairn.ID
	for i := range 16 {
		off, n := int64(i)*size/16, int64(size/16)
		if i%3 == 1 {
			off, n = off+PageSize/2, n-PageSize // straddling pages
		}
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if err := d.WriteAt(ctx, data, off); err != nil {
			t.Fatal(err)
		}
		if err := d.StartWriteback(off, n); err != nil {
			t.Fatalf("writeback of [%d, +%d): %v", off, n, err)
		}
		copy(want[off:], data)
		if i == 7 {
			s, err := e.CreateSnapshot(ctx, v.ID, "half")
			if err != nil {
				t.Fatal(err)
			}
			snap = s.ID
		}
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatalf("volume differs at %d", firstDiff(got, want))
	}
	sd, err := e.OpenSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.StartWriteback(0, size); !errors.Is(err, cairn.ErrDenied) {
		t.Errorf("writeback of a snapshot: %v, want ErrDenied", err)
	}
	sd.Close()
	d.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	d, err = e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatalf("reopened volume differs at %d", firstDiff(got, want))
	}
}
