package dbagenttest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/testenv"
)

// Volumes are the file systems the suite's data directories live on:
// the service passes its volumes and their snapshots; LoopVolumes makes
// them from image files.
type Volumes interface {
	// New returns the mount point of a new empty file system, which the
	// server's OS user can reach; it goes when t ends.
	New(t *testing.T) string
	// Snapshot takes an atomic snapshot of the file system mounted at dir
	// and returns the mount point of a new file system holding it.
	Snapshot(t *testing.T, ctx context.Context, dir string) string
}

// LoopVolumes makes ext4 file systems on loop devices over sparse image
// files in the test's temporary directory. A snapshot freezes the file
// system (fsfreeze: writes block, everything written so far is on the
// image), copies the image and thaws it: the copy is what an atomic
// block-level snapshot would hold. It freezes only mounts it made, and
// checks that the mount point's source is its own loop device first.
type LoopVolumes struct {
	// Size of each image in bytes; 0 means 512 MiB.
	Size int64
}

// NeedLoop skips t (or fails it under CI=true) unless loop mounts can be
// made: root, and the tools.
func NeedLoop(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "loop mounts and fsfreeze need root")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount", "fsfreeze", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is not installed (Debian packages mount, e2fsprogs, util-linux)")
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// New implements Volumes.
func (v LoopVolumes) New(t *testing.T) string {
	NeedLoop(t)
	size := v.Size
	if size == 0 {
		size = 512 << 20
	}
	dir := ReachableTempDir(t)
	image := filepath.Join(dir, "volume.img")
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", image)
	return mountImage(t, image)
}

func mountImage(t *testing.T, image string) string {
	t.Helper()
	device := run(t, "losetup", "--find", "--show", image)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", device).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", device, err, out)
		}
	})
	dir := filepath.Join(filepath.Dir(image), "mnt-"+filepath.Base(image))
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", device, dir)
	t.Cleanup(func() {
		// Never leave our own mount frozen, whatever failed.
		_ = exec.Command("fsfreeze", "-u", dir).Run()
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountSource returns the source device of the mount at dir, from
// /proc/self/mountinfo, or "" when nothing is mounted there.
func mountSource(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	source := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		if fields[4] == dir {
			source = fields[sep+2] // the last mount at dir is the visible one
		}
	}
	return source, s.Err()
}

// Snapshot implements Volumes.
func (v LoopVolumes) Snapshot(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	image := filepath.Join(filepath.Dir(dir), strings.TrimPrefix(filepath.Base(dir), "mnt-"))
	device := run(t, "losetup", "--noheadings", "--output", "NAME", "--associated", image)
	source, err := mountSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	if device == "" || source != device {
		t.Fatalf("refusing to freeze %s: its source is %q, not this test's loop device %q", dir, source, device)
	}
	copyDir := ReachableTempDir(t)
	snapshot := filepath.Join(copyDir, "snapshot.img")
	run(t, "fsfreeze", "-f", dir)
	out, cpErr := exec.CommandContext(ctx, "cp", "--sparse=always", image, snapshot).CombinedOutput()
	thawOut, thawErr := exec.Command("fsfreeze", "-u", dir).CombinedOutput()
	if cpErr != nil {
		t.Fatalf("copying the frozen image: %v: %s", cpErr, out)
	}
	if thawErr != nil {
		t.Fatalf("fsfreeze -u %s: %v: %s", dir, thawErr, thawOut)
	}
	return mountImage(t, snapshot)
}

// ReachableTempDir returns a new temporary directory that the servers'
// OS users (postgres, mysql) can pass through: the test's temporary
// directories are private to root.
func ReachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(fmt.Errorf("making %s reachable: %w", d, err))
			}
		}
	}
	return dir
}
