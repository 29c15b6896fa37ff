// Package local stores objects as files under a directory.
//
// Every Put writes a temporary file in the object's directory, syncs it,
// renames it into place (or links it, for IfAbsent) and syncs the directory,
// so an object is either absent or complete and durable, even across a
// crash.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/directio"
	"github.com/cairnproject/cairn/internal/objstore"
)

// tempPrefix marks files that are not (yet) objects. Object names never
// contain a component starting with '.', so the prefix cannot collide.
const tempPrefix = ".cairn-tmp-"

// Backend is a directory of object files.
type Backend struct {
	root   string
	closed atomic.Bool

	mu        sync.Mutex
	knownDirs map[string]bool // directories known to exist, to skip MkdirAll
}

var _ objstore.Backend = (*Backend)(nil)

// New returns a backend rooted at dir. The directory must exist unless
// create is set, in which case it is created.
func New(dir string, create bool) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if create {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("local: creating %s: %w", abs, err)
		}
	}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: %s: %w", abs, cairn.ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("local: %s is not a directory: %w", abs, cairn.ErrNotRepository)
	}
	return &Backend{root: abs, knownDirs: map[string]bool{}}, nil
}

// Location implements objstore.Backend.
func (b *Backend) Location() string { return "local:" + b.root }

// Close implements objstore.Backend. A directory holds nothing open
// between calls; Close only makes later calls fail.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}

// usable returns the error a call must fail with before it starts: the
// context's, or ErrClosed.
func (b *Backend) usable(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return fmt.Errorf("local: %s %s: %w", op, name, objstore.ErrClosed)
	}
	return nil
}

func (b *Backend) path(name string) (string, error) {
	if err := objstore.ValidName(name); err != nil {
		return "", err
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("object name %q: %w", name, cairn.ErrInvalid)
		}
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

func (b *Backend) ensureDir(dir string) error {
	b.mu.Lock()
	ok := b.knownDirs[dir]
	b.mu.Unlock()
	if ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Make the new directory entries themselves durable.
	for d := dir; len(d) > len(b.root); d = filepath.Dir(d) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
		b.mu.Lock()
		done := b.knownDirs[filepath.Dir(d)]
		b.mu.Unlock()
		if done {
			break
		}
	}
	b.mu.Lock()
	b.knownDirs[dir] = true
	b.mu.Unlock()
	return nil
}

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if err := b.usable(ctx, "put", name); err != nil {
		return err
	}
	p, err := b.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := b.ensureDir(dir); err != nil {
		return fmt.Errorf("local: put %s: %w", name, err)
	}
	tmp := filepath.Join(dir, tempPrefix+randomSuffix())
	if err := writeSynced(tmp, data); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("local: put %s: %w", name, err)
	}
	if opts.IfAbsent {
		err = os.Link(tmp, p)
		os.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("local: put %s: %w", name, cairn.ErrExists)
		}
	} else {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("local: put %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("local: put %s: %w", name, err)
	}
	return nil
}

// directMin is the object size from which files are written and read with
// O_DIRECT: large chunks then cost neither a copy into the page cache nor
// the eviction of the machine's real workload from it.
const directMin = 64 << 10

var directPool = directio.Pool{Size: 4<<20 + 64<<10}

func writeSynced(path string, data []byte) error {
	if len(data) >= directMin {
		if f := directio.Open(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); f != nil {
			return writeDirect(f, data)
		}
		os.Remove(path) // in case the failed direct open created it
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeDirect writes the aligned bulk of data with direct I/O from an
// aligned copy, and the tail through the page cache.
func writeDirect(f *os.File, data []byte) error {
	n := len(data) / directio.Alignment * directio.Alignment
	// Large Go allocations start on page boundaries, so the caller's
	// buffer usually needs no aligned copy.
	buf := data[:n]
	if !directio.Aligned(buf, 0) {
		if n <= directPool.Size {
			buf = directPool.Get()
			defer directPool.Put(buf)
		} else {
			buf = directio.Buffer(n)
		}
		copy(buf, data[:n])
	}
	if _, err := f.Write(buf[:n]); err != nil {
		f.Close()
		return err
	}
	if n < len(data) {
		if err := directio.ClearDirect(f); err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(data[n:]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some filesystems do not support syncing directories.
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Get implements objstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.usable(ctx, "get", name); err != nil {
		return nil, err
	}
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("local: get %s: negative offset: %w", name, cairn.ErrInvalid)
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: get %s: %w", name, cairn.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("local: get %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("local: get %s: %w", name, err)
	}
	if offset > st.Size() {
		f.Close()
		return nil, fmt.Errorf("local: get %s: offset %d beyond size %d: %w", name, offset, st.Size(), cairn.ErrInvalid)
	}
	n := st.Size() - offset
	if length >= 0 && length < n {
		n = length
	}
	if offset == 0 && n == st.Size() && n >= directMin && n <= int64(directPool.Size) {
		if data, ok := readDirect(p, n); ok {
			f.Close()
			return data, nil
		}
	}
	return &sectionReadCloser{SectionReader: io.NewSectionReader(f, offset, n), f: f}, nil
}

// readDirect reads a whole file of size n with direct I/O into a pooled
// aligned buffer.
func readDirect(path string, n int64) (io.ReadCloser, bool) {
	f := directio.Open(path, os.O_RDONLY, 0)
	if f == nil {
		return nil, false
	}
	defer f.Close()
	buf := directPool.Get()
	want := int((n + directio.Alignment - 1) / directio.Alignment * directio.Alignment)
	got, err := io.ReadFull(f, buf[:want])
	if int64(got) != n || err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		directPool.Put(buf)
		return nil, false
	}
	return &pooledReader{Reader: bytes.NewReader(buf[:n]), buf: buf}, true
}

type pooledReader struct {
	*bytes.Reader
	buf []byte
}

func (r *pooledReader) Close() error {
	if r.buf != nil {
		directPool.Put(r.buf)
		r.buf = nil
	}
	return nil
}

type sectionReadCloser struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionReadCloser) Close() error { return s.f.Close() }

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	if err := b.usable(ctx, "stat", name); err != nil {
		return objstore.ObjectInfo{}, err
	}
	p, err := b.path(name)
	if err != nil {
		return objstore.ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && st.IsDir()) {
		return objstore.ObjectInfo{}, fmt.Errorf("local: stat %s: %w", name, cairn.ErrNotFound)
	}
	if err != nil {
		return objstore.ObjectInfo{}, fmt.Errorf("local: stat %s: %w", name, err)
	}
	return objstore.ObjectInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements objstore.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.usable(ctx, "list", prefix); err != nil {
		return err
	}
	// Walk the deepest directory that contains every match.
	dirPart := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dirPart = prefix[:i]
	}
	start := filepath.Join(b.root, filepath.FromSlash(dirPart))
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if strings.HasPrefix(d.Name(), ".") && p != start {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while listing
		}
		if err != nil {
			return err
		}
		return fn(objstore.ObjectInfo{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("local: list %s: %w", prefix, err)
	}
	return nil
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.usable(ctx, "delete", name); err != nil {
		return err
	}
	p, err := b.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: delete %s: %w", name, err)
	}
	return nil
}

// RemoveTemporary deletes temporary files older than age left behind by
// interrupted writers, and returns how many it removed.
func (b *Backend) RemoveTemporary(ctx context.Context, age time.Duration) (int, error) {
	if err := b.usable(ctx, "remove temporary", ""); err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-age)
	n := 0
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if info.ModTime().Before(cutoff) {
			if err := os.Remove(p); err == nil {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("local: removing temporary files: %w", err)
	}
	return n, nil
}
