// Package directio helps with O_DIRECT transfers: alignment checks,
// aligned buffers, and opening files for direct I/O where the file system
// allows it.
package directio

import (
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alignment is what direct I/O needs of buffer addresses, offsets and
// lengths; 4096 covers devices with 512- and 4096-byte logical blocks.
const Alignment = 4096

// Aligned reports whether a transfer of buf at off can use direct I/O.
func Aligned(buf []byte, off int64) bool {
	return len(buf) > 0 && off%Alignment == 0 && len(buf)%Alignment == 0 &&
		uintptr(unsafe.Pointer(&buf[0]))%Alignment == 0
}

// Buffer returns a zeroed buffer of n bytes whose address is aligned for
// direct I/O.
func Buffer(n int) []byte {
	b := make([]byte, n+Alignment)
	skip := (Alignment - int(uintptr(unsafe.Pointer(&b[0]))%Alignment)) % Alignment
	return b[skip : skip+n : skip+n]
}

// Open opens path with O_DIRECT added to flag, or returns nil where the
// file system does not support it (tmpfs, some FUSE file systems).
func Open(path string, flag int, perm os.FileMode) *os.File {
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, perm)
	if err != nil {
		return nil
	}
	return f
}

// ClearDirect turns O_DIRECT off on an open file, for an unaligned tail.
func ClearDirect(f *os.File) error {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_DIRECT)
	return err
}

// Pool recycles aligned buffers of at least Size bytes.
type Pool struct {
	Size int
	pool sync.Pool
}

// Get returns a buffer of p.Size bytes.
func (p *Pool) Get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	return Buffer(p.Size)
}

// Put returns a buffer from Get.
func (p *Pool) Put(b []byte) {
	if cap(b) < p.Size {
		return
	}
	b = b[:p.Size]
	p.pool.Put(&b)
}
