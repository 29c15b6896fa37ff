package dbagent

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnproject/cairn"
)

func TestTarName(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"backup_label", "backup_label", true},
		{"./pg_wal/archive_status/", "pg_wal/archive_status", true},
		{"././a", "a", true},
		{"./", "", true},
		{".", "", true},
		{"a/b/", "a/b", true},
		{"/etc/passwd", "", false},
		{"../x", "", false},
		{"a/../../x", "", false},
		{"a//b", "", false},
		{"a/./b", "", false},
		{"..", "", false},
		{"a\x00b", "", false},
	} {
		got, err := TarName(c.in)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("TarName(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

type tarEntry struct {
	name     string
	typ      byte
	body     string
	linkname string
}

func makeTar(t testing.TB, entries ...tarEntry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.linkname}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestExtractTar(t *testing.T) {
	dir := t.TempDir()
	stream := makeTar(t,
		tarEntry{name: "./", typ: tar.TypeDir},
		tarEntry{name: "base/", typ: tar.TypeDir},
		tarEntry{name: "base/1/2", typ: tar.TypeReg, body: "data"},
		tarEntry{name: "./pg_wal/archive_status/", typ: tar.TypeDir},
		tarEntry{name: "skip_me", typ: tar.TypeReg, body: "x"},
		tarEntry{name: "PG_VERSION", typ: tar.TypeReg, body: "15\n"},
	)
	var seen []string
	err := ExtractTar(bytes.NewReader(stream), dir, func(name string, hdr *tar.Header) error {
		seen = append(seen, name)
		if name == "skip_me" {
			return ErrSkip
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "base/1/2")); err != nil || string(b) != "data" {
		t.Errorf("base/1/2 = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "base/1/2")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("base/1/2 mode %v, %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "pg_wal/archive_status")); err != nil || !fi.IsDir() {
		t.Errorf("pg_wal/archive_status: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "skip_me")); err == nil {
		t.Error("skipped entry written")
	}
	if len(seen) != 5 {
		t.Errorf("allow saw %v", seen)
	}

	refused := []struct {
		name    string
		entries []tarEntry
		want    error
	}{
		{"escape", []tarEntry{{name: "../x", typ: tar.TypeReg, body: "x"}}, cairn.ErrCorrupt},
		{"absolute", []tarEntry{{name: "/tmp/x", typ: tar.TypeReg, body: "x"}}, cairn.ErrCorrupt},
		{"symlink", []tarEntry{{name: "l", typ: tar.TypeSymlink, linkname: "/etc"}}, cairn.ErrUnsupported},
		{"hard link", []tarEntry{{name: "l", typ: tar.TypeLink, linkname: "PG_VERSION"}}, cairn.ErrUnsupported},
		{"fifo", []tarEntry{{name: "f", typ: tar.TypeFifo}}, cairn.ErrUnsupported},
	}
	for _, r := range refused {
		err := ExtractTar(bytes.NewReader(makeTar(t, r.entries...)), t.TempDir(), nil)
		if !errors.Is(err, r.want) {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}
	if err := ExtractTar(bytes.NewReader(stream[:700]), t.TempDir(), nil); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("truncated stream: %v", err)
	}
}

// TestExtractTarSymlinkInDir: a symlink already in the directory does not
// lead writes out of it.
func TestExtractTarSymlinkInDir(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "pg_wal")); err != nil {
		t.Fatal(err)
	}
	err := ExtractTar(bytes.NewReader(makeTar(t, tarEntry{name: "pg_wal/seg", typ: tar.TypeReg, body: "x"})), dir, nil)
	if err == nil {
		t.Error("extracting through a symlink that leaves the directory succeeded")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside: %v", entries)
	}
}

// FuzzExtractTar: whatever the stream, nothing is written outside the
// directory.
func FuzzExtractTar(f *testing.F) {
	f.Add(makeTar(f, tarEntry{name: "a/b", typ: tar.TypeReg, body: "x"}))
	f.Add(makeTar(f, tarEntry{name: "../a", typ: tar.TypeReg, body: "x"}))
	f.Add(makeTar(f, tarEntry{name: "d/", typ: tar.TypeDir}, tarEntry{name: "d/../../e", typ: tar.TypeReg}))
	// One parent for every input, emptied before each, in memory where
	// the machine has /dev/shm: a temporary directory made and removed
	// on disk per input made this target take most of the fuzzing step.
	parent, err := os.MkdirTemp("/dev/shm", "fuzz-extract-tar-")
	if err != nil {
		parent = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(parent) })
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		left, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range left {
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		dir := filepath.Join(parent, "x")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = ExtractTar(bytes.NewReader(stream), dir, nil)
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "x" {
			t.Fatalf("written outside the directory: %v", entries)
		}
	})
}

// TestExtractTarRefusesSparse: GNU tar's sparse files (testdata: a 1 GiB
// file of one hole and three bytes, PAX and GNU formats, 10 KiB each)
// would be expanded by the reader; they are refused.
func TestExtractTarRefusesSparse(t *testing.T) {
	for _, name := range []string{"sparse-pax.tar", "sparse-gnu.tar"} {
		f, err := os.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		err = ExtractTar(f, dir, nil)
		f.Close()
		if !errors.Is(err, cairn.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "big")); err == nil {
			t.Errorf("%s: sparse entry written, %d bytes", name, fi.Size())
		}
	}
}
