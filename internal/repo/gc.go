package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// GCOptions tune a garbage collection.
type GCOptions struct {
	// DryRun reports what would be condemned without writing or deleting.
	DryRun bool
}

// GCStats reports what a garbage collection did.
type GCStats struct {
	Backups           int           `json:"backups"`
	ChunksStored      int           `json:"chunks_stored"`
	ChunksReferenced  int           `json:"chunks_referenced"`
	ChunksCondemned   int           `json:"chunks_condemned"`
	ChunksDeleted     int           `json:"chunks_deleted"`
	BytesFreed        int64         `json:"bytes_freed"`
	ChunksPending     int           `json:"chunks_pending"`
	BytesPending      int64         `json:"bytes_pending"`
	Pending           []string      `json:"pending,omitempty"`
	IndexPartsDeleted int           `json:"index_parts_deleted"`
	SessionsRemoved   int           `json:"sessions_removed"`
	TemporaryRemoved  int           `json:"temporary_removed"`
	Duration          time.Duration `json:"duration"`
}

type sessionInfo struct {
	marker  *format.Session
	modTime time.Time
}

// GC deletes chunks that no backup references, without blocking backups.
// It follows the protocol in docs/format.md: unreferenced chunks are first
// condemned (recorded in a set), and a set is swept only when every
// running backup has seen it and none holds it. With no backup running, a
// single GC condemns and sweeps.
func (r *Repository) GC(ctx context.Context, opts GCOptions) (GCStats, error) {
	started := r.now()
	var stats GCStats
	stored, err := r.storedChunks(ctx)
	if err != nil {
		return stats, err
	}
	stats.ChunksStored = len(stored)

	if opts.DryRun {
		live, backups, err := r.liveChunks(ctx)
		if err != nil {
			return stats, err
		}
		stats.Backups, stats.ChunksReferenced = backups, len(live)
		for id, size := range stored {
			if !live[id] {
				stats.ChunksCondemned++
				stats.BytesPending += size
			}
		}
		stats.ChunksPending = stats.ChunksCondemned
		stats.Duration = r.now().Sub(started)
		return stats, nil
	}

	if err := r.removeStaleSessions(ctx, &stats); err != nil {
		return stats, err
	}

	// Forget sets swept long enough ago, then sweep what earlier runs
	// condemned.
	all, err := r.listCondemned(ctx)
	if err != nil {
		return stats, err
	}
	var sets []condemnedInfo
	// Chunks of recently swept sets are gone, though a lagging listing may
	// still show them: they must not be condemned again, as if they were
	// stored, in a new set a backup could hold.
	ghosts := map[format.ChunkID]bool{}
	for _, set := range all {
		if !set.Swept {
			sets = append(sets, set)
			continue
		}
		ids, err := r.readCondemned(ctx, set.ID)
		if err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return stats, err
		}
		for _, id := range ids {
			ghosts[id] = true
		}
	}
	for id := range ghosts {
		delete(stored, id)
	}
	if err := r.forgetSwept(ctx, all); err != nil {
		return stats, err
	}
	remaining, err := r.sweep(ctx, sets, stored, &stats)
	if err != nil {
		return stats, err
	}

	// Condemn what nothing references now.
	live, backups, err := r.liveChunks(ctx)
	if err != nil {
		return stats, err
	}
	stats.Backups, stats.ChunksReferenced = backups, len(live)
	pending := map[format.ChunkID]bool{}
	for _, set := range remaining {
		ids, err := r.readCondemned(ctx, set.ID)
		if err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return stats, err
		}
		for _, id := range ids {
			pending[id] = true
		}
	}
	var condemn []format.ChunkID
	for id := range stored {
		if !live[id] && !pending[id] && !ghosts[id] {
			condemn = append(condemn, id)
		}
	}
	if len(condemn) > 0 {
		slices.SortFunc(condemn, func(a, b format.ChunkID) int { return strings.Compare(string(a[:]), string(b[:])) })
		set := cairn.NewID()
		if _, err := r.putSealed(ctx, format.TypeGCSet, condemnedName(set), format.EncodeIDSet(condemn), objstore.PutOptions{}); err != nil {
			return stats, fmt.Errorf("writing condemned set: %w", err)
		}
		stats.ChunksCondemned = len(condemn)
		info, err := r.be.Stat(ctx, condemnedName(set))
		if err != nil {
			return stats, fmt.Errorf("reading condemned set: %w", err)
		}
		left, err := r.sweep(ctx, []condemnedInfo{{ID: set, ModTime: info.ModTime}}, stored, &stats)
		if err != nil {
			return stats, err
		}
		remaining = append(remaining, left...)
	}
	for _, set := range remaining {
		ids, err := r.readCondemned(ctx, set.ID)
		if err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return stats, err
		}
		for _, id := range ids {
			if size, ok := stored[id]; ok {
				stats.ChunksPending++
				stats.BytesPending += size
			}
		}
	}

	if err := r.removeOrphanIndexes(ctx, &stats); err != nil {
		return stats, err
	}
	n, err := objstore.RemoveTemporary(ctx, r.be, r.sessionTimeout())
	if err != nil {
		return stats, err
	}
	stats.TemporaryRemoved = n
	stats.Duration = r.now().Sub(started)
	return stats, nil
}

// sessions lists the session markers with their store modification times.
func (r *Repository) sessions(ctx context.Context) ([]sessionInfo, error) {
	var infos []objstore.ObjectInfo
	err := r.be.List(ctx, format.SessionsPrefix, func(info objstore.ObjectInfo) error {
		infos = append(infos, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	var out []sessionInfo
	for _, info := range infos {
		plain, err := r.getSealed(ctx, format.TypeSession, info.Name)
		if errors.Is(err, cairn.ErrNotFound) {
			continue // ended since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("reading session: %w", err)
		}
		m, err := format.DecodeSession(plain)
		if err != nil {
			return nil, err
		}
		// The listing's time may predate the latest refresh.
		if st, err := r.be.Stat(ctx, info.Name); err == nil {
			info = st
		}
		out = append(out, sessionInfo{marker: m, modTime: info.ModTime})
	}
	return out, nil
}

func (r *Repository) liveSessions(ctx context.Context) (map[cairn.ID]sessionInfo, error) {
	all, err := r.sessions(ctx)
	if err != nil {
		return nil, err
	}
	now, err := r.storeNow(ctx)
	if err != nil {
		return nil, err
	}
	live := map[cairn.ID]sessionInfo{}
	for _, s := range all {
		if now.Sub(s.modTime) <= r.sessionTimeout() {
			live[s.marker.ID] = s
		}
	}
	return live, nil
}

// removeStaleSessions deletes markers of sessions that stopped refreshing:
// their processes died or stopped themselves.
func (r *Repository) removeStaleSessions(ctx context.Context, stats *GCStats) error {
	all, err := r.sessions(ctx)
	if err != nil {
		return err
	}
	now, err := r.storeNow(ctx)
	if err != nil {
		return err
	}
	for _, s := range all {
		if now.Sub(s.modTime) > r.sessionTimeout() {
			if err := r.be.Delete(ctx, sessionName(s.marker.ID)); err != nil {
				return err
			}
			stats.SessionsRemoved++
		}
	}
	return nil
}

// sweep deletes the unreferenced chunks of the sets that may be swept now
// and returns the sets that must wait.
func (r *Repository) sweep(ctx context.Context, sets []condemnedInfo, stored map[format.ChunkID]int64, stats *GCStats) ([]condemnedInfo, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	margin := time.Duration(r.cfg.GC.ConsistencyMargin)
	now, err := r.storeNow(ctx)
	if err != nil {
		return nil, err
	}
	live, err := r.liveSessions(ctx)
	if err != nil {
		return nil, err
	}
	var waiting, ready []condemnedInfo
	for _, set := range sets {
		// Twice the margin: a backup that listed condemned sets before this
		// one was visible wrote its marker early enough for us to list it.
		if margin > 0 && now.Sub(set.ModTime) < 2*margin {
			stats.Pending = append(stats.Pending, fmt.Sprintf("condemned set %s: younger than twice the consistency margin %v", set.ID.Short(), margin))
			waiting = append(waiting, set)
			continue
		}
		var blocker *format.Session
		for _, s := range live {
			if !slices.Contains(s.marker.Seen, set.ID) {
				blocker = s.marker
				break
			}
		}
		if blocker != nil {
			stats.Pending = append(stats.Pending, fmt.Sprintf("condemned set %s: backup %s (session %s on %s, started %s) has not seen it yet",
				set.ID.Short(), blocker.Backup.Short(), blocker.ID.Short(), blocker.Hostname, blocker.Started.Format(time.RFC3339)))
			waiting = append(waiting, set)
			continue
		}
		ready = append(ready, set)
	}
	if len(ready) == 0 {
		return waiting, nil
	}

	// Announce the sweeps, then look for holds: a backup that wrote its
	// hold before our marker existed is seen here; one that writes it later
	// finds our marker and waits.
	sw := &sweeper{r: r}
	for _, set := range ready {
		if err := r.putJSON(ctx, format.TypeMarker, sweepingName(set.ID), struct{}{}, objstore.PutOptions{}); err != nil {
			return nil, fmt.Errorf("announcing sweep: %w", err)
		}
		sw.sets = append(sw.sets, set.ID)
	}
	sw.refreshed = r.now()
	defer sw.end(context.WithoutCancel(ctx))
	if err := r.pause(ctx, margin); err != nil {
		return nil, err
	}
	live, err = r.liveSessions(ctx)
	if err != nil {
		return nil, err
	}
	var ready2 []condemnedInfo
	for _, set := range ready {
		held, err := r.holds(ctx, set.ID, live)
		if err != nil {
			return nil, err
		}
		if held != nil {
			stats.Pending = append(stats.Pending, fmt.Sprintf("condemned set %s: held by backup %s (session %s on %s)",
				set.ID.Short(), held.Backup.Short(), held.ID.Short(), held.Hostname))
			_ = r.be.Delete(ctx, sweepingName(set.ID))
			waiting = append(waiting, set)
			continue
		}
		ready2 = append(ready2, set)
	}
	if len(ready2) == 0 {
		return waiting, nil
	}

	stop, err := sw.keepAlive(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	// A backup that released its hold before the listing above committed
	// its manifest before that; wait until such a manifest is listable.
	if err := r.pause(ctx, margin); err != nil {
		return nil, err
	}
	referenced, _, err := r.liveChunks(ctx)
	if err != nil {
		return nil, err
	}
	for _, set := range ready2 {
		ids, err := r.readCondemned(ctx, set.ID)
		if errors.Is(err, cairn.ErrNotFound) {
			continue // another GC swept it
		}
		if err != nil {
			return nil, err
		}
		var doomed []format.ChunkID
		for _, id := range ids {
			if !referenced[id] {
				doomed = append(doomed, id)
			}
		}
		// In batches of at most a thousand, with a check of this sweep's
		// markers before each: a sweep that could look dead stops.
		for len(doomed) > 0 {
			if err := sw.check(); err != nil {
				return nil, err
			}
			n := min(len(doomed), objstore.MaxBatchDelete)
			names := make([]string, n)
			for i, id := range doomed[:n] {
				names[i] = id.ObjectName()
			}
			var mu sync.Mutex
			err := objstore.DeleteAll(ctx, r.be, names, r.opts.Transfers, func(gone []string) {
				mu.Lock()
				defer mu.Unlock()
				for _, name := range gone {
					id, _ := format.ChunkIDFromObjectName(name)
					if size, ok := stored[id]; ok {
						stats.ChunksDeleted++
						stats.BytesFreed += size
						delete(stored, id)
					}
				}
			})
			if err != nil {
				return nil, fmt.Errorf("deleting chunks: %w", err)
			}
			doomed = doomed[n:]
		}
		// The set stays, marked swept, for twice the margin: a lagging
		// listing may still show its deleted chunks, and a backup must
		// see that they are gone (docs/format.md).
		if _, err := r.putSealed(ctx, format.TypeMarker, sweptName(set.ID), nil, objstore.PutOptions{}); err != nil {
			return nil, fmt.Errorf("marking condemned set swept: %w", err)
		}
		if err := r.be.List(ctx, format.HoldsPrefix+set.ID.String()+"/", func(info objstore.ObjectInfo) error {
			return r.be.Delete(ctx, info.Name)
		}); err != nil {
			return nil, err
		}
		if margin == 0 {
			if err := r.removeSet(ctx, set.ID); err != nil {
				return nil, err
			}
		}
	}
	return waiting, nil
}

// forgetSwept removes condemned sets swept more than twice the
// consistency margin ago: by then no listing shows their chunks.
func (r *Repository) forgetSwept(ctx context.Context, sets []condemnedInfo) error {
	margin := time.Duration(r.cfg.GC.ConsistencyMargin)
	var now time.Time
	for _, set := range sets {
		if !set.Swept {
			continue
		}
		if now.IsZero() {
			var err error
			if now, err = r.storeNow(ctx); err != nil {
				return err
			}
		}
		if now.Sub(set.SweptAt) >= 2*margin {
			if err := r.removeSet(ctx, set.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeSet deletes a swept condemned set and its markers.
func (r *Repository) removeSet(ctx context.Context, set cairn.ID) error {
	for _, name := range []string{condemnedName(set), sweptName(set)} {
		if err := r.be.Delete(ctx, name); err != nil {
			return fmt.Errorf("removing swept set: %w", err)
		}
	}
	return nil
}

// holds returns the marker of a live session holding set, or nil. Holds of
// dead sessions are deleted.
func (r *Repository) holds(ctx context.Context, set cairn.ID, live map[cairn.ID]sessionInfo) (*format.Session, error) {
	prefix := format.HoldsPrefix + set.String() + "/"
	var names []string
	if err := r.be.List(ctx, prefix, func(info objstore.ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing holds: %w", err)
	}
	for _, name := range names {
		sid, err := cairn.ParseID(strings.TrimPrefix(name, prefix))
		if err != nil {
			continue
		}
		if s, ok := live[sid]; ok {
			return s.marker, nil
		}
		// The listing may lag: ask for the marker by name before calling
		// the holder dead.
		if m, alive, err := r.sessionAlive(ctx, sid); err != nil {
			return nil, err
		} else if alive {
			return m, nil
		}
		if err := r.be.Delete(ctx, name); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// sessionAlive reads one session marker by name and reports whether it is
// fresh.
func (r *Repository) sessionAlive(ctx context.Context, id cairn.ID) (*format.Session, bool, error) {
	info, err := r.be.Stat(ctx, sessionName(id))
	if errors.Is(err, cairn.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	plain, err := r.getSealed(ctx, format.TypeSession, sessionName(id))
	if errors.Is(err, cairn.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	m, err := format.DecodeSession(plain)
	if err != nil {
		return nil, false, err
	}
	now, err := r.storeNow(ctx)
	if err != nil {
		return nil, false, err
	}
	return m, now.Sub(info.ModTime) <= r.sessionTimeout(), nil
}

// sweeper keeps the sweeping markers of one GC fresh and stops the sweep
// before they could look stale to a backup waiting on them.
type sweeper struct {
	r    *Repository
	sets []cairn.ID

	mu        sync.Mutex
	refreshed time.Time
}

// keepAlive rewrites the sweeping markers every SessionTimeout/3 until
// stop is called, which waits for it to end.
func (sw *sweeper) keepAlive(ctx context.Context) (stop func(), err error) {
	r := sw.r
	interval := r.sessionTimeout() / 3
	done := make(chan struct{})
	ended := make(chan struct{})
	// The ticks start before this returns (see Options.Ticks).
	ticks, stopTicks := r.opts.Ticks(interval / 2)
	err = r.goBackground(func() {
		defer close(ended)
		defer stopTicks()
		r.refreshLoop(ctx, done, ticks, func() bool {
			sw.mu.Lock()
			defer sw.mu.Unlock()
			return r.now().Sub(sw.refreshed) >= interval
		}, sw.refresh)
	})
	if err != nil {
		stopTicks()
		return nil, err
	}
	return func() { close(done); <-ended }, nil
}

// refresh rewrites every sweeping marker of the sweep; the sweep counts
// as refreshed only when all of them were written.
func (sw *sweeper) refresh(ctx context.Context) error {
	before := sw.r.now()
	var first error
	for _, set := range sw.sets {
		if err := sw.r.putJSON(ctx, format.TypeMarker, sweepingName(set), struct{}{}, objstore.PutOptions{}); err != nil && first == nil {
			first = fmt.Errorf("refreshing the sweep of condemned set %s: %w", set.Short(), err)
		}
	}
	if first != nil {
		return first
	}
	sw.mu.Lock()
	sw.refreshed = before
	sw.mu.Unlock()
	return nil
}

func (sw *sweeper) check() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if age := sw.r.now().Sub(sw.refreshed); age > sw.r.sessionTimeout()*2/3 {
		return fmt.Errorf("sweep markers not refreshed for %v; stopping so waiting backups may proceed: %w", age.Round(time.Second), cairn.ErrConflict)
	}
	return nil
}

func (sw *sweeper) end(ctx context.Context) {
	for _, set := range sw.sets {
		_ = sw.r.be.Delete(ctx, sweepingName(set))
	}
}

// liveChunks returns every chunk some backup references, and the number of
// backups. An unreadable index stops the collection: deleting on a partial
// view could destroy data.
func (r *Repository) liveChunks(ctx context.Context) (map[format.ChunkID]bool, int, error) {
	list, err := r.Backups(ctx)
	if err != nil {
		return nil, 0, err
	}
	for name, err := range list.Damaged {
		if ok, serr := objstore.Exists(ctx, r.be, name); serr == nil && !ok {
			continue // forgotten meanwhile
		}
		return nil, 0, fmt.Errorf("backup manifest %s is unreadable (%v); garbage collection stopped to protect data, run check: %w", name, err, cairn.ErrCorrupt)
	}
	live := map[format.ChunkID]bool{}
	var mu sync.Mutex
	err = forEachParallel(ctx, len(list.Backups), r.opts.Transfers, func(ctx context.Context, i int) error {
		m := list.Backups[i]
		entries, err := r.Index(ctx, m)
		if err != nil {
			if ok, serr := objstore.Exists(ctx, r.be, manifestName(m.ID)); serr == nil && !ok {
				return nil // forgotten meanwhile
			}
			return fmt.Errorf("%w; garbage collection stopped to protect data, run check", err)
		}
		mu.Lock()
		for _, e := range entries {
			if !e.Zero {
				live[e.Chunk] = true
			}
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return live, len(list.Backups), nil
}

// removeOrphanIndexes deletes index parts that belong to no backup: left by
// a killed backup or an interrupted forget.
func (r *Repository) removeOrphanIndexes(ctx context.Context, stats *GCStats) error {
	parts := map[cairn.ID][]string{}
	newest := map[cairn.ID]time.Time{}
	err := r.be.List(ctx, format.IndexesPrefix, func(info objstore.ObjectInfo) error {
		rest := strings.TrimPrefix(info.Name, format.IndexesPrefix)
		idStr, _, ok := strings.Cut(rest, "/")
		if !ok {
			return nil
		}
		id, err := cairn.ParseID(idStr)
		if err != nil {
			return nil
		}
		parts[id] = append(parts[id], info.Name)
		if info.ModTime.After(newest[id]) {
			newest[id] = info.ModTime
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing indexes: %w", err)
	}
	if len(parts) == 0 {
		return nil
	}
	now, err := r.storeNow(ctx)
	if err != nil {
		return err
	}
	live, err := r.liveSessions(ctx)
	if err != nil {
		return err
	}
	running := map[cairn.ID]bool{}
	for _, s := range live {
		running[s.marker.Backup] = true
	}
	for id, names := range parts {
		// A backup writes its index parts just before its manifest; a
		// young part may belong to a session a lagging listing hides.
		if running[id] || now.Sub(newest[id]) < r.sessionTimeout() {
			continue
		}
		if ok, err := objstore.Exists(ctx, r.be, manifestName(id)); err != nil || ok {
			if err != nil {
				return err
			}
			continue
		}
		for _, name := range names {
			if err := r.be.Delete(ctx, name); err != nil {
				return err
			}
			stats.IndexPartsDeleted++
		}
	}
	return nil
}
