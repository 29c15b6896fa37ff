package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// layer is one level of a volume's tree: a sparse file holding pages at
// their volume offsets, and the presence that says which pages it holds.
// A frozen layer (a snapshot's) never changes content; the head layer of a
// volume takes its writes.
type layer struct {
	id  uint64
	dir string

	// data is opened read-write for heads and merge targets, read-only
	// otherwise; it is closed when the layer is released or deleted.
	data *os.File

	mu      sync.Mutex
	pres    *presence // loaded for heads; nil for frozen layers until needed
	pending []byte    // log records not yet written (heads only)
	log     *os.File  // heads only
	flushMu sync.Mutex
}

func layerPath(dir string, id uint64, ext string) string {
	return filepath.Join(dir, "layers", strconv.FormatUint(id, 10)+ext)
}

// createLayerFiles makes an empty sparse data file of size bytes.
func createLayerFiles(dir string, id uint64, size int64) error {
	f, err := os.OpenFile(layerPath(dir, id, ".data"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating layer %d: %w", id, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("creating layer %d: %w", id, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, ext := range []string{".pres", ".log"} {
		if err := os.Remove(layerPath(dir, id, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return syncDir(filepath.Join(dir, "layers"))
}

// openLayer opens a layer's data file; writable heads also get their log.
func openLayer(dir string, id uint64, writable bool) (*layer, error) {
	l := &layer{id: id, dir: dir}
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(layerPath(dir, id, ".data"), flag, 0)
	if err != nil {
		return nil, fmt.Errorf("opening layer %d: %w", id, err)
	}
	l.data = f
	if writable {
		if err := l.openLog(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return l, nil
}

func (l *layer) openLog() error {
	f, err := os.OpenFile(layerPath(l.dir, l.id, ".log"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening layer %d log: %w", l.id, err)
	}
	l.log = f
	return nil
}

// loadPresence reads the layer's checkpoint and replays its log. certain
// is false when something was unreadable and the presence had to be
// rebuilt from the data file's allocation (which may miss trimmed pages).
func (l *layer) loadPresence(nblocks int64) (p *presence, certain bool, err error) {
	certain = true
	data, err := os.ReadFile(layerPath(l.dir, l.id, ".pres"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p = newPresence(nblocks)
	case err != nil:
		return nil, false, fmt.Errorf("reading layer %d presence: %w", l.id, err)
	default:
		if p, err = decodePresence(data); err != nil {
			if p, err = l.presenceFromAllocation(nblocks); err != nil {
				return nil, false, err
			}
			certain = false
		}
	}
	p.grow(nblocks)
	logData, err := os.ReadFile(layerPath(l.dir, l.id, ".log"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("reading layer %d log: %w", l.id, err)
	}
	if n := replayLog(p, logData); n < len(logData) && len(logData)-n >= logRecordSize {
		// More than a torn last record: the log was damaged, and pages it
		// would have recorded may be missing.
		certain = false
	}
	return p, certain, nil
}

// presenceFromAllocation rebuilds a presence from the data file's
// allocated ranges: pages that hold data. Trimmed pages are holes and are
// missed, so the result is only a best effort.
func (l *layer) presenceFromAllocation(nblocks int64) (*presence, error) {
	p := newPresence(nblocks)
	fd := int(l.data.Fd())
	st, err := l.data.Stat()
	if err != nil {
		return nil, err
	}
	var off int64
	for off < st.Size() {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no more data
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		for pg := start / PageSize; pg*PageSize < end; pg++ {
			p.add(pg/pagesPerBlock, 1<<(pg%pagesPerBlock))
		}
		off = end
	}
	return p, nil
}

// record notes pages newly held by a head, for the next flush.
func (l *layer) record(b int64, mask uint16) {
	l.pending = encodeLogRecord(l.pending, b, mask)
}

// flush makes the head's written data durable, then its new presence
// records: a record is never durable before the data it describes.
func (l *layer) flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	recs := l.pending
	l.pending = nil
	l.mu.Unlock()
	restore := func() {
		l.mu.Lock()
		l.pending = append(recs, l.pending...)
		l.mu.Unlock()
	}
	if err := unix.Fdatasync(int(l.data.Fd())); err != nil {
		restore()
		return fmt.Errorf("syncing layer %d: %w", l.id, err)
	}
	if len(recs) == 0 || l.log == nil {
		return nil
	}
	if _, err := l.log.Write(recs); err != nil {
		restore()
		return fmt.Errorf("writing layer %d log: %w", l.id, err)
	}
	if err := unix.Fdatasync(int(l.log.Fd())); err != nil {
		return fmt.Errorf("syncing layer %d log: %w", l.id, err)
	}
	return nil
}

// checkpoint writes the whole presence and empties the log.
func (l *layer) checkpoint(p *presence) error {
	if err := writeFileAtomic(layerPath(l.dir, l.id, ".pres"), p.encode()); err != nil {
		return fmt.Errorf("checkpointing layer %d: %w", l.id, err)
	}
	if l.log != nil {
		if err := l.log.Truncate(0); err != nil {
			return err
		}
		if err := l.log.Sync(); err != nil {
			return err
		}
	} else if err := os.Remove(layerPath(l.dir, l.id, ".log")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (l *layer) close() {
	if l.data != nil {
		l.data.Close()
	}
	if l.log != nil {
		l.log.Close()
	}
}

func removeLayerFiles(dir string, id uint64) error {
	for _, ext := range []string{".data", ".pres", ".log", ".pres.tmp"} {
		if err := os.Remove(layerPath(dir, id, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing layer %d: %w", id, err)
		}
	}
	return nil
}

// writeFileAtomic replaces path with data durably: a temporary file,
// synced, renamed into place, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
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
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}
