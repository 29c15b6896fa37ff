package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

func manifestName(id cairn.ID) string { return format.BackupsPrefix + id.String() }

func indexPartName(backup cairn.ID, part int) string {
	return fmt.Sprintf("%s%s/%04d", format.IndexesPrefix, backup, part)
}

// BackupList is the set of visible backups, oldest first, and the manifests
// that could not be read.
type BackupList struct {
	Backups []*format.Manifest
	Damaged map[string]error
}

// Backups lists the backups in the repository.
func (r *Repository) Backups(ctx context.Context) (*BackupList, error) {
	var names []string
	err := r.be.List(ctx, format.BackupsPrefix, func(info objstore.ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	list := &BackupList{Damaged: map[string]error{}}
	results := make([]*format.Manifest, len(names))
	errs := make([]error, len(names))
	err = forEachParallel(ctx, len(names), r.opts.Transfers, func(ctx context.Context, i int) error {
		m, err := r.readManifest(ctx, names[i])
		if errors.Is(err, cairn.ErrNotFound) {
			return nil // forgotten since the listing
		}
		results[i], errs[i] = m, err
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, m := range results {
		switch {
		case errs[i] != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			list.Damaged[names[i]] = errs[i]
		case m != nil:
			list.Backups = append(list.Backups, m)
		}
	}
	slices.SortFunc(list.Backups, func(a, b *format.Manifest) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return list, nil
}

// Latest returns the newest volume backup of a source, the default parent
// of its next backup, or nil when there is none. Stream backups are never
// parents, and are passed over.
func (r *Repository) Latest(ctx context.Context, source string) (*format.Manifest, error) {
	list, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	var latest *format.Manifest
	for _, m := range list.Backups {
		if m.Source == source && !m.IsStream() {
			latest = m // the list is oldest first
		}
	}
	return latest, nil
}

func (r *Repository) readManifest(ctx context.Context, name string) (*format.Manifest, error) {
	plain, err := r.getSealed(ctx, format.TypeManifest, name)
	if err != nil {
		return nil, err
	}
	m, err := format.DecodeManifest(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if manifestName(m.ID) != name {
		return nil, fmt.Errorf("%s: manifest names backup %s: %w", name, m.ID, cairn.ErrCorrupt)
	}
	return m, nil
}

// Manifest reads one backup's manifest.
func (r *Repository) Manifest(ctx context.Context, id cairn.ID) (*format.Manifest, error) {
	m, err := r.readManifest(ctx, manifestName(id))
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id.Short(), err)
	}
	return m, nil
}

// ResolveBackup finds a backup by ID, unique ID prefix, or "latest".
func (r *Repository) ResolveBackup(ctx context.Context, ref string) (*format.Manifest, error) {
	if id, err := cairn.ParseID(ref); err == nil {
		return r.Manifest(ctx, id)
	}
	list, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "latest" {
		if len(list.Backups) == 0 {
			return nil, fmt.Errorf("latest backup: the repository has none: %w", cairn.ErrNotFound)
		}
		return list.Backups[len(list.Backups)-1], nil
	}
	ids := make([]cairn.ID, len(list.Backups))
	for i, m := range list.Backups {
		ids[i] = m.ID
	}
	id, err := resolvePrefix("backup", ref, ids)
	if err != nil {
		return nil, err
	}
	for _, m := range list.Backups {
		if m.ID == id {
			return m, nil
		}
	}
	return nil, fmt.Errorf("backup %s: %w", ref, cairn.ErrNotFound)
}

// Index loads a backup's whole index.
func (r *Repository) Index(ctx context.Context, m *format.Manifest) ([]format.Entry, error) {
	n := 0
	for _, p := range m.Index {
		n += p.Entries
	}
	all := make([]format.Entry, 0, n)
	for _, p := range m.Index {
		entries, err := r.indexPart(ctx, m, p)
		if err != nil {
			return nil, err
		}
		all = append(all, entries...)
	}
	return all, nil
}

func (r *Repository) indexPart(ctx context.Context, m *format.Manifest, p format.IndexPart) ([]format.Entry, error) {
	if !strings.HasPrefix(p.Name, format.IndexesPrefix+m.ID.String()+"/") {
		return nil, fmt.Errorf("backup %s: index part %s belongs elsewhere: %w", m.ID.Short(), p.Name, cairn.ErrCorrupt)
	}
	plain, err := r.getSealed(ctx, format.TypeIndex, p.Name)
	if err != nil {
		return nil, fmt.Errorf("backup %s: index: %w", m.ID.Short(), err)
	}
	entries, err := format.DecodeIndex(plain)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %s: %w", m.ID.Short(), p.Name, err)
	}
	var total int64
	for _, e := range entries {
		if e.Length > m.ChunkSize || (!e.Zero && e.ChunkOffset+e.Length > m.ChunkSize) {
			return nil, fmt.Errorf("backup %s: %s: entry larger than a chunk: %w", m.ID.Short(), p.Name, cairn.ErrCorrupt)
		}
		total += e.Length
	}
	if len(entries) != p.Entries || total != p.Length {
		return nil, fmt.Errorf("backup %s: %s: %d entries covering %d bytes, manifest says %d covering %d: %w",
			m.ID.Short(), p.Name, len(entries), total, p.Entries, p.Length, cairn.ErrCorrupt)
	}
	return entries, nil
}

// Forget removes backups. Their chunks stay until GC finds them
// unreferenced. Restores of other backups never depend on a forgotten one.
func (r *Repository) Forget(ctx context.Context, ids []cairn.ID) error {
	for _, id := range ids {
		m, err := r.Manifest(ctx, id)
		if err != nil {
			return err
		}
		// The manifest goes first: without it the backup is invisible, and
		// GC collects index parts that no manifest names.
		if err := r.be.Delete(ctx, manifestName(id)); err != nil {
			return fmt.Errorf("forgetting %s: %w", id.Short(), err)
		}
		for _, p := range m.Index {
			if err := r.be.Delete(ctx, p.Name); err != nil {
				return fmt.Errorf("forgetting %s: %w", id.Short(), err)
			}
		}
	}
	return nil
}
