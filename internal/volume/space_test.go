package volume

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
)

func dirUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var used int64
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			used += blocksUsed(info)
		}
		return nil
	})
	return used
}

// Deleting a snapshot gives back what nothing else needs; a clone takes
// no space until written.
func TestSnapshotSpace(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	e := openEngine(t, dir)
	v, d := newVolume(t, e, 64<<20)
	fill := func(seed uint64) []byte {
		data := make([]byte, 8<<20)
		r := rand.New(rand.NewPCG(seed, seed))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := d.WriteAt(ctx, data, 4<<20); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return data
	}
	fill(1)
	s1, err := e.CreateSnapshot(ctx, v.ID, "s1")
	if err != nil {
		t.Fatal(err)
	}
	second := fill(2)
	s2, err := e.CreateSnapshot(ctx, v.ID, "s2")
	if err != nil {
		t.Fatal(err)
	}
	third := fill(3)
	three := dirUsage(t, dir)
	if three < 24<<20 {
		t.Fatalf("three layers of 8 MiB use %d bytes", three)
	}

	// A clone of s2 costs nothing until written.
	c, err := e.CloneVolume(ctx, "c", s2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u := dirUsage(t, dir); u > three+1<<20 {
		t.Fatalf("a clone took %d bytes", u-three)
	}
	cd, err := e.OpenVolume(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, cd)[4<<20 : 12<<20]; !bytes.Equal(got, second) {
		t.Fatal("clone does not show its snapshot's content")
	}
	cd.Close()
	if err := e.DeleteVolume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}

	// s1's pages are all overwritten in s2: deleting it frees its 8 MiB.
	if err := e.DeleteSnapshot(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	if u := dirUsage(t, dir); u > three-7<<20 {
		t.Fatalf("deleting s1 freed %d bytes of 8 MiB", three-u)
	}
	if err := e.DeleteSnapshot(ctx, s2.ID); err != nil {
		t.Fatal(err)
	}
	if u := dirUsage(t, dir); u > three-15<<20 {
		t.Fatalf("deleting s1 and s2 freed %d bytes of 16 MiB", three-u)
	}
	if got := readAll(t, d)[4<<20 : 12<<20]; !bytes.Equal(got, third) {
		t.Fatal("volume content changed by snapshot deletion")
	}
}

func FuzzDecodePresence(f *testing.F) {
	p := newPresence(1000)
	p.add(3, fullMask)
	p.add(4, fullMask)
	p.add(10, 0x00f0)
	p.add(999, 1)
	f.Add(p.encode())
	f.Add(newPresence(0).encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := decodePresence(data)
		if err != nil {
			return
		}
		if !bytes.Equal(q.encode(), data) {
			t.Fatal("presence does not re-encode to the same bytes")
		}
	})
}

func FuzzReplayLog(f *testing.F) {
	f.Add(encodeLogRecord(encodeLogRecord(nil, 5, 3), 1<<20, fullMask))
	f.Add(encodeLogRecord(encodeLogRecord(nil, 5, 3), 15, fullMask))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newPresence(16)
		n := replayLog(p, data)
		if n < 0 || n > len(data) || n%logRecordSize != 0 {
			t.Fatalf("replay consumed %d of %d bytes", n, len(data))
		}
		if p.nblocks() != 16 {
			t.Fatalf("a log grew the presence to %d blocks", p.nblocks())
		}
	})
}

// TestMergeCrash deletes a snapshot whose layer must be merged, in both
// directions, and stops the process at every step of the merge: after a
// restart every remaining snapshot and the volume read as before, and the
// deletion can be finished.
func TestMergeCrash(t *testing.T) {
	errStop := errors.New("stopped")
	for _, step := range []string{"merge.copied", "merge.checkpointed", "merge.saved",
		"mergeDown.copied", "mergeDown.checkpointed", "mergeDown.saved"} {
		t.Run(step, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			e := openEngine(t, dir)
			v, d := newVolume(t, e, 8<<20)
			big, small := bytes.Repeat([]byte{1}, 6<<20), bytes.Repeat([]byte{2}, 64<<10)
			// Down: the deleted snapshot's layer is big, its child small.
			// Up: the other way round.
			first, second := big, small
			if strings.HasPrefix(step, "merge.") {
				first, second = small, big
			}
			if err := d.WriteAt(ctx, first, 0); err != nil {
				t.Fatal(err)
			}
			s1, err := e.CreateSnapshot(ctx, v.ID, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.WriteAt(ctx, second, 1<<20); err != nil {
				t.Fatal(err)
			}
			s2, err := e.CreateSnapshot(ctx, v.ID, "s2")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.WriteAt(ctx, []byte("head"), 7<<20); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			ds2 := mustOpenSnapshot(t, e, s2.ID)
			want2 := readAll(t, ds2)
			wantV := readAll(t, d)
			e.stopAt(step, errStop)
			if err := e.DeleteSnapshot(ctx, s1.ID); !errors.Is(err, errStop) {
				t.Fatalf("delete: %v, want the stop at %s", err, step)
			}
			e.crash()
			e = openEngine(t, dir)
			check := func() {
				t.Helper()
				ds, err := e.OpenSnapshot(s2.ID)
				if err != nil {
					t.Fatal(err)
				}
				defer ds.Close()
				if got := readAll(t, ds); !bytes.Equal(got, want2) {
					t.Fatal("snapshot s2 changed")
				}
				dv, err := e.OpenVolume(v.ID)
				if err != nil {
					t.Fatal(err)
				}
				defer dv.Close()
				if got := readAll(t, dv); !bytes.Equal(got, wantV) {
					t.Fatal("volume changed")
				}
			}
			check()
			// The deleted snapshot is gone; deleting s2 now merges again.
			if _, err := e.Snapshot(s1.ID); err == nil {
				t.Fatal("the deleted snapshot came back")
			}
			if err := e.DeleteSnapshot(ctx, s2.ID); err != nil {
				t.Fatal(err)
			}
			dv, err := e.OpenVolume(v.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, dv); !bytes.Equal(got, wantV) {
				t.Fatal("volume changed after the merges")
			}
			dv.Close()
			// Only the head's files remain.
			files, _ := filepath.Glob(filepath.Join(dir, "layers", "*.data"))
			if len(files) != 1 {
				t.Fatalf("layer files left: %v", files)
			}
		})
	}
}

func mustOpenSnapshot(t *testing.T, e *Engine, id cairn.ID) *Device {
	t.Helper()
	d, err := e.OpenSnapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestMergeIntoOpenHead deletes the only snapshot of a volume that is
// open and small since: the head is merged down into the snapshot's
// layer with I/O paused, and the volume keeps working through the same
// device. Stopped at each step, a restart finds the volume intact.
func TestMergeIntoOpenHead(t *testing.T) {
	errStop := errors.New("stopped")
	for _, step := range []string{"", "mergeDownHead.copied", "mergeDownHead.checkpointed", "mergeDownHead.saved"} {
		t.Run("stop at "+step, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			e := openEngine(t, dir)
			v, d := newVolume(t, e, 8<<20)
			if err := d.WriteAt(ctx, bytes.Repeat([]byte{1}, 6<<20), 0); err != nil {
				t.Fatal(err)
			}
			s1, err := e.CreateSnapshot(ctx, v.ID, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.WriteAt(ctx, bytes.Repeat([]byte{2}, 70000), 1<<20+100); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			want := readAll(t, d)
			if step != "" {
				e.stopAt(step, errStop)
			}
			err = e.DeleteSnapshot(ctx, s1.ID)
			if step == "" {
				if err != nil {
					t.Fatal(err)
				}
				// The same device goes on: reads, writes, flush.
				if got := readAll(t, d); !bytes.Equal(got, want) {
					t.Fatal("volume changed by the merge")
				}
				if files, _ := filepath.Glob(filepath.Join(dir, "layers", "*.data")); len(files) != 1 {
					t.Fatalf("layer files after the merge: %v", files)
				}
				if err := d.WriteAt(ctx, []byte("after"), 5<<20); err != nil {
					t.Fatal(err)
				}
				copy(want[5<<20:], "after")
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				e.crash() // flushed: must survive
			} else {
				if !errors.Is(err, errStop) {
					t.Fatalf("delete: %v, want the stop at %s", err, step)
				}
				e.crash()
			}
			e = openEngine(t, dir)
			dv, err := e.OpenVolume(v.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer dv.Close()
			if got := readAll(t, dv); !bytes.Equal(got, want) {
				t.Fatalf("volume differs after restart (first difference at %d)", firstDiff(got, want))
			}
			if _, err := e.Snapshot(s1.ID); err == nil {
				t.Fatal("the deleted snapshot came back")
			}
		})
	}
}
