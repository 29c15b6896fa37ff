package blockdev_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/blockdev"
	"github.com/cairnproject/cairn/internal/directio"
	"github.com/cairnproject/cairn/internal/testenv"
)

func TestAllocatedFindsHoles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 8<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src, err := blockdev.OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ext, ok, err := src.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		testenv.SkipOrFail(t, "the file system under the test's temporary directory does not report holes (SEEK_DATA/SEEK_HOLE)")
	}
	var total int64
	for _, e := range ext {
		total += e.Length
		if e.Offset > 8<<20 || e.End() < 9<<20 {
			t.Fatalf("allocated extent %v does not cover the written MiB", e)
		}
	}
	if total < 1<<20 || total > 4<<20 {
		t.Fatalf("%d bytes allocated for 1 MiB written", total)
	}
}

func TestReadAtDirectAndBuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i * 13)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := blockdev.OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, tc := range []struct {
		name string
		buf  []byte
		off  int64
	}{
		{"aligned", directio.Buffer(1 << 20), 1 << 20},
		{"unaligned offset", directio.Buffer(4096), 100},
		{"unaligned buffer", make([]byte, 5000), 4096},
		{"tail", directio.Buffer(1 << 20), 3 << 20},
	} {
		n, err := src.ReadAt(tc.buf, tc.off)
		want := data[tc.off:min(int64(len(data)), tc.off+int64(len(tc.buf)))]
		if n != len(want) || !bytes.Equal(tc.buf[:n], want) {
			t.Fatalf("%s: read %d bytes (%v), want %d", tc.name, n, err, len(want))
		}
	}
}

func TestOpenTarget(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.img")
	tg, err := blockdev.OpenTarget(path, 10<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Fresh() || tg.Size() != 10<<20 {
		t.Fatalf("new target: fresh %v size %d", tg.Fresh(), tg.Size())
	}
	buf := directio.Buffer(1 << 20)
	buf[0] = 7
	if _, err := tg.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt([]byte{9}, 5); err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(1<<20, 4096); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	got, _ := os.ReadFile(path)
	if len(got) != 10<<20 || got[5] != 9 || got[1<<20] != 0 {
		t.Fatalf("target content wrong: len %d", len(got))
	}

	// An existing non-empty file needs overwrite; then it is resized.
	if _, err := blockdev.OpenTarget(path, 1<<20, false); !errors.Is(err, cairn.ErrExists) {
		t.Fatalf("existing target without overwrite: %v", err)
	}
	tg, err = blockdev.OpenTarget(path, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Fresh() {
		t.Fatal("an existing target is not fresh")
	}
	tg.Close()
	if st, _ := os.Stat(path); st.Size() != 1<<20 {
		t.Fatalf("resized to %d", st.Size())
	}
	if _, err := blockdev.OpenTarget(dir, 1, true); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory as target: %v", err)
	}
}
