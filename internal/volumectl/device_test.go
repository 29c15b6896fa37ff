package volumectl_test

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/testenv"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// TestDevices: a device opened through Ops reads, writes, zeroes and
// describes its volume, directly and over the control socket; a device
// keeps its volume in use until closed.
func TestDevices(t *testing.T) {
	for name, kit := range opsKits(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			ops, _ := kit(t)
			const size = 8 << 20
			v, err := ops.CreateVolume(ctx, "v", size)
			if err != nil {
				t.Fatal(err)
			}
			dev, err := ops.OpenDevice(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			if dev.Size() != size || dev.ReadOnly() || !dev.MultiConn() {
				t.Errorf("device: size %d, read-only %v, multi-conn %v", dev.Size(), dev.ReadOnly(), dev.MultiConn())
			}
			data := bytes.Repeat([]byte("cairn!"), 300_000) // larger than one page, unaligned
			if err := dev.WriteAt(ctx, data, 4096+17); err != nil {
				t.Fatal(err)
			}
			if err := dev.Zero(ctx, 8192, 4096, false); err != nil {
				t.Fatal(err)
			}
			if err := dev.Trim(ctx, 6<<20, 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := dev.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, size)
			copy(want[4096+17:], data)
			clear(want[8192 : 8192+4096])
			clear(want[6<<20 : 7<<20])
			got := make([]byte, size)
			if err := dev.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the device does not read back what was written and zeroed")
			}
			list, err := dev.BlockStatus(ctx, 0, size)
			if err != nil {
				t.Fatal(err)
			}
			var covered int64
			for _, ext := range list {
				if ext.Zero && !bytes.Equal(want[covered:covered+ext.Length], make([]byte, ext.Length)) {
					t.Errorf("block status: [%d, %d) said to read as zeros holds data", covered, covered+ext.Length)
				}
				covered += ext.Length
			}
			if covered == 0 || covered > size {
				t.Errorf("block status covers %d bytes of %d", covered, size)
			}
			if err := ops.DeleteVolume(ctx, v.ID); !errors.Is(err, cairn.ErrConflict) {
				t.Errorf("delete of a volume with a device open: %v, want a conflict", err)
			}
			if err := dev.WriteAt(ctx, []byte{1}, size); err == nil {
				t.Error("a write past the end succeeded")
			}
			if err := dev.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := ops.OpenDevice(ctx, cairn.NewID()); !errors.Is(err, cairn.ErrNotFound) {
				t.Errorf("open of a missing volume: %v, want not found", err)
			}
			if err := ops.DeleteVolume(ctx, v.ID); err != nil {
				t.Errorf("delete after the device closed: %v", err)
			}
		})
	}
}

// TestExports: exports are set, listed and removed through Ops; the table
// is on disk, so a data directory opened again serves them again.
func TestExports(t *testing.T) {
	for name, kit := range opsKits(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			ops, _ := kit(t)
			v, err := ops.CreateVolume(ctx, "v", 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			if err := ops.Export(ctx, "vol-a", v.ID); err != nil {
				t.Fatal(err)
			}
			if err := ops.Export(ctx, "vol-a", v.ID); err != nil {
				t.Fatalf("exporting again: %v", err)
			}
			if err := ops.Export(ctx, "vol-b", cairn.NewID()); !errors.Is(err, cairn.ErrNotFound) {
				t.Errorf("export of a missing volume: %v, want not found", err)
			}
			if err := ops.Export(ctx, "", v.ID); !errors.Is(err, cairn.ErrInvalid) {
				t.Errorf("export without a name: %v, want invalid", err)
			}
			m, err := ops.Exported(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 1 || m["vol-a"] != v.ID {
				t.Errorf("exports %v, want vol-a -> %s", m, v.ID)
			}
			if err := ops.Unexport(ctx, "vol-a"); err != nil {
				t.Fatal(err)
			}
			if err := ops.Unexport(ctx, "vol-a"); err != nil {
				t.Errorf("unexporting what is not exported: %v", err)
			}
			if m, _ := ops.Exported(ctx); len(m) != 0 {
				t.Errorf("exports after unexport: %v", m)
			}
		})
	}
}

func TestExportTablePersists(t *testing.T) {
	dir := t.TempDir()
	e, err := volume.Open(dir, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.CreateVolume(t.Context(), "v", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	x, err := volumectl.OpenExportTable(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Set("a", v.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = volume.Open(dir, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x, err = volumectl.OpenExportTable(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.All(); len(got) != 1 || got["a"] != v.ID {
		t.Fatalf("table after reopening: %v", got)
	}
	cat := volumectl.Catalog{Table: x}
	exp, release, err := cat.Open(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if exp.Size() != 4<<20 || exp.ReadOnly() {
		t.Errorf("export: size %d, read-only %v", exp.Size(), exp.ReadOnly())
	}
	release()
	if _, _, err := cat.Open(t.Context(), v.ID.String()); !errors.Is(err, cairn.ErrNotFound) {
		t.Errorf("a volume not in the table, by ID, without All: %v, want not found", err)
	}
	all := volumectl.Catalog{Table: x, All: true}
	if _, release, err := all.Open(t.Context(), v.ID.String()); err != nil {
		t.Errorf("a volume by ID with All: %v", err)
	} else {
		release()
	}
}

func TestExportTableCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not json":      "{",
		"wrong version": `{"version": 2, "exports": {}}`,
		"empty name":    `{"version": 1, "exports": {"": "0b5cbf7e-8a2b-4a0b-9e1f-3b8c2f1d6a55"}}`,
		"zero volume":   `{"version": 1, "exports": {"a": "00000000-0000-0000-0000-000000000000"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "exports.json"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := volumectl.OpenExportTable(dir, nil); !errors.Is(err, cairn.ErrCorrupt) {
				t.Errorf("open: %v, want corrupt", err)
			}
		})
	}
}

// TestReleaseOrphans: a reader or device a process opened on the control
// socket and left open when it died keeps its snapshot or volume in use
// until ReleaseOrphans closes it; one whose opener lives is kept. The dead
// opener is a real process: curl, which exits once answered.
func TestReleaseOrphans(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.SkipOrFail(t, "curl is not installed")
	}
	ctx := t.Context()
	e, x := openEngineTable(t)
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: volumectl.Handler(volumectl.Direct{E: e, X: x}), ConnContext: volumectl.ConnContext}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	c := volumectl.NewClient(sock)
	v, err := c.CreateVolume(ctx, "v", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSnapshot(ctx, v.ID, "s")
	if err != nil {
		t.Fatal(err)
	}
	// Opened by curl, which exits: orphans.
	curl := func(path, body string) {
		out, err := exec.Command("curl", "-sS", "--fail", "--unix-socket", sock, "-X", "POST",
			"-H", "Content-Type: application/json", "-d", body, "http://cairn"+path).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v: %s", path, err, out)
		}
	}
	// Opened by this process, which lives. (Opening a handle also closes
	// the orphans there are then: this one comes first.)
	dev, err := c.OpenDevice(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	curl("/readers", `{"snapshot":"`+s.ID.String()+`"}`)
	curl("/devices", `{"volume":"`+v.ID.String()+`"}`)
	if err := c.DeleteSnapshot(ctx, s.ID); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("delete of a snapshot a dead process left open: %v, want a conflict", err)
	}
	n, err := c.ReleaseOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("released %d handles, want the 2 curl left", n)
	}
	if err := c.DeleteSnapshot(ctx, s.ID); err != nil {
		t.Errorf("delete of the snapshot once its orphan reader closed: %v", err)
	}
	if err := dev.WriteAt(ctx, []byte("alive"), 0); err != nil {
		t.Errorf("the live process's device was closed: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVolume(ctx, v.ID); err != nil {
		t.Errorf("delete of the volume once every device closed: %v", err)
	}
}
