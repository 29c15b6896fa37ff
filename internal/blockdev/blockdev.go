// Package blockdev reads backup sources and writes restore targets: raw
// image files and block devices. It knows about holes (SEEK_DATA and
// SEEK_HOLE, hole punching) and device sizes, and nothing about
// repositories.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/directio"
)

// File is an open image file or block device. Aligned transfers go
// through a second descriptor opened with O_DIRECT, which spares the CPU a
// copy and the page cache of the machine's real workload from a backup's
// one-pass stream; the rest goes through the page cache.
type File struct {
	f       *os.File
	direct  *os.File // nil where direct I/O is unavailable
	size    int64
	isBlock bool
	// fresh: the target was created empty by OpenTarget, so every byte
	// reads as zero and nothing needs comparing or zeroing.
	fresh bool
}

func stat(f *os.File) (size int64, isBlock bool, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	switch {
	case st.Mode().IsRegular():
		return st.Size(), false, nil
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, true, fmt.Errorf("size of block device: %w", err)
		}
		return end, true, nil
	default:
		return 0, false, fmt.Errorf("%s is neither a regular file nor a block device: %w", f.Name(), cairn.ErrInvalid)
	}
}

// OpenSource opens path for reading.
func OpenSource(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening source: %w", err)
	}
	size, isBlock, err := stat(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening source: %w", err)
	}
	// A backup reads forward in large requests: ask for a wide read-ahead
	// for what does not go direct.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	return &File{f: f, direct: directio.Open(path, os.O_RDONLY, 0), size: size, isBlock: isBlock}, nil
}

// Size returns the size in bytes.
func (d *File) Size() int64 { return d.size }

// Name returns the path it was opened with.
func (d *File) Name() string { return d.f.Name() }

// IsBlockDevice reports whether d is a block device.
func (d *File) IsBlockDevice() bool { return d.isBlock }

// Fresh reports whether d is a target that OpenTarget created empty.
func (d *File) Fresh() bool { return d.fresh }

// ReadAt implements io.ReaderAt. Reads past the end return io.EOF.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if d.direct != nil && directio.Aligned(p, off) && off+int64(len(p)) <= d.size {
		return d.direct.ReadAt(p, off)
	}
	return d.f.ReadAt(p, off)
}

// WriteAt implements io.WriterAt.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.direct != nil && directio.Aligned(p, off) {
		return d.direct.WriteAt(p, off)
	}
	return d.f.WriteAt(p, off)
}

// Close closes the file.
func (d *File) Close() error {
	if d.direct != nil {
		d.direct.Close()
		d.direct = nil
	}
	return d.f.Close()
}

// Sync flushes written data to stable storage.
func (d *File) Sync() error { return d.f.Sync() }

// Allocated returns the extents that may hold data, sorted; everything else
// is a hole and reads as zeros. ok is false when the file system cannot
// tell (block devices, file systems without SEEK_DATA).
func (d *File) Allocated() (extents []cairn.Extent, ok bool, err error) {
	if d.isBlock {
		return nil, false, nil
	}
	fd := int(d.f.Fd())
	var off int64
	for off < d.size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, false, fmt.Errorf("seek hole: %w", err)
		}
		if hole > d.size {
			hole = d.size
		}
		if hole > data {
			extents = append(extents, cairn.Extent{Offset: data, Length: hole - data})
		}
		off = hole
	}
	return extents, true, nil
}

// OpenTarget opens path for a restore of size bytes. A missing path is
// created as a sparse file. An existing regular file is resized to size. A
// block device must be at least size bytes. overwrite must be set to
// write into an existing non-empty target.
func OpenTarget(path string, size int64, overwrite bool) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("opening target: %w", err)
	}
	cur, isBlock, err := stat(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening target: %w", err)
	}
	d := &File{f: f, direct: directio.Open(path, os.O_RDWR, 0), size: cur, isBlock: isBlock}
	if isBlock {
		if cur < size {
			d.Close()
			return nil, fmt.Errorf("target %s holds %d bytes, the backup needs %d: %w", path, cur, size, cairn.ErrInvalid)
		}
		if !overwrite {
			d.Close()
			return nil, fmt.Errorf("target %s is a block device; pass overwrite to replace its contents: %w", path, cairn.ErrExists)
		}
		return d, nil
	}
	if !created && cur > 0 && !overwrite {
		d.Close()
		return nil, fmt.Errorf("target %s exists and is not empty; pass overwrite to replace it: %w", path, cairn.ErrExists)
	}
	d.fresh = cur == 0
	if err := f.Truncate(size); err != nil {
		d.Close()
		if created {
			os.Remove(path)
		}
		return nil, fmt.Errorf("resizing target: %w", err)
	}
	d.size = size
	return d, nil
}

// blkZeroOut is BLKZEROOUT from linux/fs.h: _IO(0x12, 127).
const blkZeroOut = 0x127f

// Zero makes [off, off+n) read as zeros: a punched hole in a file, a
// zero-out on a block device, written zeros where neither works.
func (d *File) Zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	fd := int(d.f.Fd())
	if d.isBlock {
		rng := [2]uint64{uint64(off), uint64(n)}
		if err := ioctlPtr(fd, blkZeroOut, &rng); err == nil {
			return nil
		}
	} else {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
	}
	return d.writeZeros(off, n)
}

func (d *File) writeZeros(off, n int64) error {
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, int64(len(zeros)))
		if _, err := d.f.WriteAt(zeros[:m], off); err != nil {
			return fmt.Errorf("writing zeros: %w", err)
		}
		off += m
		n -= m
	}
	return nil
}
