package volumectl_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// opsKits are the implementations of Ops; every one runs the same suite.
func opsKits(t *testing.T) map[string]func(t *testing.T) (volumectl.Ops, *volume.Engine) {
	return map[string]func(t *testing.T) (volumectl.Ops, *volume.Engine){
		"direct": func(t *testing.T) (volumectl.Ops, *volume.Engine) {
			e, x := openEngineTable(t)
			return volumectl.Direct{E: e, X: x}, e
		},
		"client": func(t *testing.T) (volumectl.Ops, *volume.Engine) {
			e, x := openEngineTable(t)
			sock := filepath.Join(t.TempDir(), "c.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: volumectl.Handler(volumectl.Direct{E: e, X: x}), ConnContext: volumectl.ConnContext}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { _ = srv.Close() })
			return volumectl.NewClient(sock), e
		},
	}
}

func openEngine(t *testing.T) *volume.Engine {
	t.Helper()
	e, _ := openEngineTable(t)
	return e
}

// openEngineTable opens an engine in a new data directory, with the
// directory's export table.
func openEngineTable(t *testing.T) (*volume.Engine, *volumectl.ExportTable) {
	t.Helper()
	dir := t.TempDir()
	e, err := volume.Open(dir, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	x, err := volumectl.OpenExportTable(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	return e, x
}

func TestOps(t *testing.T) {
	for name, kit := range opsKits(t) {
		t.Run(name, func(t *testing.T) { testOps(t, kit) })
	}
}

func testOps(t *testing.T, kit func(t *testing.T) (volumectl.Ops, *volume.Engine)) {
	ctx := t.Context()
	ops, e := kit(t)
	v, err := ops.CreateVolume(ctx, "v", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ops.Volume(ctx, v.ID); err != nil || got.Name != "v" || got.Size != 4<<20 {
		t.Fatalf("volume: %+v %v", got, err)
	}
	write(t, e, v.ID, bytes.Repeat([]byte{7}, 8192), 65536)
	s, err := ops.CreateSnapshot(ctx, v.ID, "s")
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, v.ID, bytes.Repeat([]byte{9}, 4096), 1<<20)
	list, known, err := ops.ChangedExtents(ctx, &volume.Ref{Snapshot: s.ID}, volume.Ref{Volume: v.ID})
	if err != nil || !known || len(list) != 1 || list[0] != (cairn.Extent{Offset: 1 << 20, Length: 4096}) {
		t.Fatalf("changed extents: %v %v %v", list, known, err)
	}
	rd, err := ops.Open(ctx, volume.Ref{Snapshot: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	if _, err := rd.ReadAt(buf, 65536); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{7}, 8192)) {
		t.Fatalf("snapshot content: %v", err)
	}
	if alloc, ok, err := rd.Allocated(); err != nil || !ok || len(alloc) != 1 {
		t.Fatalf("allocated: %v %v %v", alloc, ok, err)
	}
	if rd.Size() != 4<<20 {
		t.Fatalf("size %d", rd.Size())
	}
	rd.Close()
	if err := ops.ExtendVolume(ctx, v.ID, 8<<20); err != nil {
		t.Fatal(err)
	}
	c, err := ops.CloneVolume(ctx, "c", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if vols, err := ops.Volumes(ctx); err != nil || len(vols) != 2 {
		t.Fatalf("volumes: %v %v", vols, err)
	}
	if snaps, err := ops.Snapshots(ctx, v.ID); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
	if err := ops.RevertVolume(ctx, v.ID, s.ID); err != nil {
		t.Fatal(err)
	}
	// Errors keep their kind across the socket.
	for _, tc := range []struct {
		err  error
		want error
	}{
		{ops.DeleteVolume(ctx, cairn.NewID()), cairn.ErrNotFound},
		{ops.DeleteVolume(ctx, v.ID), cairn.ErrConflict},
		{ops.ExtendVolume(ctx, v.ID, 1<<20), cairn.ErrInvalid},
		{ops.DeleteSnapshot(ctx, cairn.NewID()), cairn.ErrNotFound},
		{func() error { _, err := ops.Snapshot(ctx, cairn.NewID()); return err }(), cairn.ErrNotFound},
		{func() error { _, err := ops.CreateVolume(ctx, "x", -1); return err }(), cairn.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("got %v, want %v", tc.err, tc.want)
		}
	}
	if err := ops.DeleteSnapshot(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []cairn.ID{v.ID, c.ID} {
		if err := ops.DeleteVolume(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t *testing.T, e *volume.Engine, id cairn.ID, p []byte, off int64) {
	t.Helper()
	d, err := e.OpenVolume(id)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WriteAt(context.Background(), p, off); err != nil {
		t.Fatal(err)
	}
}
