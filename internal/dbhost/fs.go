package dbhost

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn/internal/attach"
)

// FileSystems makes, mounts and unmounts the instances' file systems.
// Its methods may be called concurrently for different devices.
type FileSystems interface {
	// Format makes an ext4 file system on device.
	Format(ctx context.Context, device string) error
	// Mount mounts device's file system at dir.
	Mount(ctx context.Context, device, dir string) error
	// Unmount unmounts dir.
	Unmount(ctx context.Context, dir string) error
	// Mounted returns the source of the mount at dir, if dir is one.
	Mounted(dir string) (source string, ok bool)
	// Usage returns the bytes in use and the size of the file system
	// mounted at dir, ok false when dir is not a mount.
	Usage(dir string) (used, size int64, ok bool)
	// Trim writes out the file system mounted at dir (its data and its
	// journal) and discards its free blocks, so a snapshot of the volume
	// taken next holds no block of a deleted file.
	Trim(ctx context.Context, dir string) error
}

// hostFileSystems runs the host's mkfs.ext4, mount and umount.
type hostFileSystems struct{}

// Format makes the file system without discarding (a new volume reads
// as zeros already) and with lazy initialisation off, so the first
// minutes of the database do not compete with the kernel zeroing inode
// tables over NBD.
func (hostFileSystems) Format(ctx context.Context, device string) error {
	return run(ctx, "mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", "-L", "cairn", device)
}

func (hostFileSystems) Mount(ctx context.Context, device, dir string) error {
	return run(ctx, "mount", "-t", "ext4", "-o", "noatime", device, dir)
}

// Unmount unmounts dir; a busy file system is unmounted lazily, which
// is only reached once its server is stopped.
func (hostFileSystems) Unmount(ctx context.Context, dir string) error {
	if err := run(ctx, "umount", dir); err != nil {
		if lerr := run(ctx, "umount", "-l", dir); lerr != nil {
			return err
		}
	}
	return nil
}

func (hostFileSystems) Mounted(dir string) (string, bool) { return attach.MountedAt(dir) }

func (fs hostFileSystems) Usage(dir string) (int64, int64, bool) {
	if _, ok := fs.Mounted(dir); !ok {
		return 0, 0, false
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	size := int64(st.Blocks) * st.Bsize
	return size - int64(st.Bfree)*st.Bsize, size, true
}

// fstrimRange is the kernel's struct fstrim_range, and fitrim the
// ioctl that takes it: _IOWR('X', 121, struct fstrim_range).
type fstrimRange struct{ start, length, minLen uint64 }

const fitrim = 0xc0185879

// trimMinLen: free runs shorter than a volume block (64 KiB) are not
// discarded; a block is left out of a snapshot's backup only when it
// is a hole whole.
const trimMinLen = 64 << 10

func (hostFileSystems) Trim(ctx context.Context, dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	defer f.Close()
	// Blocks freed in a journal transaction not yet committed are not
	// free to FITRIM: commit it first.
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	r := fstrimRange{length: math.MaxUint64, minLen: trimMinLen}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fitrim, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return fmt.Errorf("FITRIM %s: %w", dir, errno)
	}
	return ctx.Err()
}

// syncFileSystem writes everything cached of the file system holding
// dir to its device (syncfs).
func syncFileSystem(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
