package dbhost

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairnproject/cairn/internal/testenv"
)

// TestTrimDiscardsDeletedFile: the blocks of a file deleted just before
// Trim (freed in a journal transaction not yet committed) reach the
// device as discards, which a loop device turns into holes in its
// backing file; the file system stays whole.
func TestTrimDiscardsDeletedFile(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "trim needs root, for a loop device and a mount")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is not installed (Debian packages mount, e2fsprogs)")
		}
	}
	ctx := t.Context()
	dir := t.TempDir()
	att := &loopAttacher{dir: dir, attached: map[string]string{}}
	id := att.create(t, 256<<20)
	img := att.image(id)
	dev, err := att.Attach(ctx, "trim", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = att.Detach(context.Background(), "trim") })
	var fs hostFileSystems
	if err := fs.Format(ctx, dev); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := fs.Mount(ctx, dev, mnt); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
	})

	data := make([]byte, 64<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(mnt, "deleted")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(mnt, "kept")
	if err := os.WriteFile(kept, data[:1<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syncFileSystem(mnt); err != nil {
		t.Fatal(err)
	}
	before := allocated(t, img)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := fs.Trim(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	after := allocated(t, img)
	if freed := before - after; freed < 60<<20 {
		t.Errorf("the image went from %d to %d bytes allocated after a 64 MiB file was deleted and the file system trimmed; want at least 60 MiB freed", before, after)
	}

	got, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data[:1<<20]) {
		t.Error("the file kept changed")
	}
	if err := fs.Unmount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if out, err := exec.CommandContext(ctx, "e2fsck", "-fn", dev).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after the trim: %v: %s", err, out)
	}
}

// allocated returns the bytes a file takes on its file system.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
