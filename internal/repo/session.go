package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// A session is one running backup as the garbage collector sees it. It
// implements the backup's half of the protocol in docs/format.md
// ("Garbage collection"):
//
//   - a marker under sessions/ names the session and lists every condemned
//     set it has seen; it is refreshed every SessionTimeout/3, and the
//     session stops before SessionTimeout passes without a refresh;
//   - the session never reuses a chunk of a seen condemned set without
//     first writing a hold on that set and then finding that no sweep of
//     it has started; otherwise it uploads the chunk again;
//   - on first seeing a condemned set that contains a chunk it already
//     references, it holds the set before recording it as seen.
type session struct {
	r        *Repository
	id       cairn.ID
	backupID cairn.ID
	started  time.Time

	mu          sync.Mutex
	lastRefresh time.Time
	holdObjects map[cairn.ID]bool // hold objects written, to delete at the end
	seen        map[cairn.ID]bool
	held        map[cairn.ID]bool
	swept       map[cairn.ID]bool // condemned sets found swept: their chunks may be gone
	// holding has the sets one goroutine is holding now (writing the hold,
	// then looking for a sweep, and waiting for one under way): the
	// channel is closed when it is done. Others that need the set wait for
	// that instead of holding it again; nothing else waits on it, and no
	// lock is held across the wait, so a hold that waits for a sweep
	// blocks only the goroutines that need that set.
	holding   map[cairn.ID]chan struct{}
	condemned map[format.ChunkID][]cairn.ID // every seen condemned set that lists the chunk
	gone      map[format.ChunkID]bool       // chunks of swept sets: upload again whatever else lists them
	used      map[format.ChunkID]struct{}   // every chunk the backup references
	failed    error

	stop chan struct{}
	done chan struct{}
}

func sessionName(id cairn.ID) string { return format.SessionsPrefix + id.String() }

func condemnedName(set cairn.ID) string { return format.CondemnedPrefix + set.String() }

func sweepingName(set cairn.ID) string { return format.SweepingPrefix + set.String() }

func sweptName(set cairn.ID) string { return format.SweptPrefix + set.String() }

func holdName(set, session cairn.ID) string {
	return format.HoldsPrefix + set.String() + "/" + session.String()
}

func (r *Repository) sessionTimeout() time.Duration { return time.Duration(r.cfg.GC.SessionTimeout) }

// sweepPoll is how often a backup looks whether a sweep it waits for has
// ended.
const sweepPoll = 500 * time.Millisecond

func (r *Repository) startSession(ctx context.Context, backupID cairn.ID) (*session, error) {
	s := &session{
		r:           r,
		id:          cairn.NewID(),
		backupID:    backupID,
		started:     r.now().UTC(),
		seen:        map[cairn.ID]bool{},
		held:        map[cairn.ID]bool{},
		swept:       map[cairn.ID]bool{},
		holding:     map[cairn.ID]chan struct{}{},
		gone:        map[format.ChunkID]bool{},
		holdObjects: map[cairn.ID]bool{},
		condemned:   map[format.ChunkID][]cairn.ID{},
		used:        map[format.ChunkID]struct{}{},
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	// The marker exists before the session reads anything it may reuse, so
	// no sweep can start that this session has not agreed to.
	if err := s.writeMarker(ctx, objstore.PutOptions{}); err != nil {
		return nil, fmt.Errorf("starting backup session: %w", err)
	}
	if err := s.seeNewSets(ctx); err != nil {
		s.remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("starting backup session: %w", err)
	}
	// The ticks start before this returns, so a test that has seen the
	// backup begin can tick them (Options.Ticks).
	interval := r.sessionTimeout() / 3
	ticks, stopTicks := r.opts.Ticks(interval / 2)
	err := r.goBackground(func() {
		defer close(s.done)
		defer stopTicks()
		r.refreshLoop(ctx, s.stop, ticks, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return r.now().Sub(s.lastRefresh) >= interval
		}, s.heartbeat)
	})
	if err != nil {
		stopTicks()
		s.remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("starting backup session: %w", err)
	}
	return s, nil
}

func (s *session) writeMarker(ctx context.Context, opts objstore.PutOptions) error {
	s.mu.Lock()
	m := format.Session{
		Version:  1,
		ID:       s.id,
		Backup:   s.backupID,
		Hostname: s.r.opts.Hostname,
		PID:      os.Getpid(),
		Started:  s.started,
	}
	for id := range s.seen {
		m.Seen = append(m.Seen, id)
	}
	s.mu.Unlock()
	before := s.r.now()
	if err := s.r.putJSON(ctx, format.TypeSession, sessionName(s.id), m, opts); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A marker that went unrefreshed for longer than check allows may have
	// looked dead to a garbage collection, which may then have swept sets
	// the session had not seen; refreshing it now does not undo that.
	gap := s.r.now().Sub(s.lastRefresh)
	stale := !s.lastRefresh.IsZero() && gap > s.r.sessionTimeout()*2/3
	s.lastRefresh = before
	if stale {
		err := fmt.Errorf("backup session went %v without a refresh (store unreachable? process paused?); a garbage collection may have taken it for dead: %w", gap.Round(time.Second), cairn.ErrConflict)
		if s.failed == nil {
			s.failed = err
		}
		return err
	}
	return nil
}

// refresh rewrites the marker, then takes in the condemned sets not seen
// before (seeNewSets). The marker is written first, with the sets seen so
// far, so that the session stays alive to the garbage collector however
// long taking in new sets takes; safety does not depend on it (a sweep of
// a set waits for every live session to list it as seen).
func (s *session) refresh(ctx context.Context) error {
	if err := s.writeMarker(ctx, objstore.PutOptions{}); err != nil {
		return err
	}
	return s.seeNewSets(ctx)
}

// seeNewSets loads condemned sets not seen before, holds those that list a
// chunk the session already uses, and, when it saw any, rewrites the
// marker to list them.
func (s *session) seeNewSets(ctx context.Context) error {
	sets, err := s.r.listCondemned(ctx)
	if err != nil {
		return err
	}
	added := false
	for _, set := range sets {
		s.mu.Lock()
		known := s.seen[set.ID]
		s.mu.Unlock()
		if known {
			continue
		}
		ids, err := s.r.readCondemned(ctx, set.ID)
		if errors.Is(err, cairn.ErrNotFound) {
			continue // swept since the listing
		}
		if err != nil {
			return err
		}
		// Recording the set and testing for overlap under one lock: a chunk
		// claimed after this point takes the holding path in claim.
		s.mu.Lock()
		overlap := false
		for _, c := range ids {
			if set.Swept {
				s.gone[c] = true
			} else {
				s.condemned[c] = append(s.condemned[c], set.ID)
			}
			_, inUse := s.used[c]
			overlap = overlap || inUse
		}
		if set.Swept {
			s.swept[set.ID] = true
		}
		s.mu.Unlock()
		// No sweep of a set this session has not seen can start while the
		// session is alive (a sweep waits for every live session to list
		// the set as seen), so this hold does not wait for a sweep. A set
		// found swept, or listed swept already, was swept by a gc that
		// took the session for dead: chunks the session uses may be gone.
		if overlap {
			held, err := s.decide(ctx, set.ID)
			if err != nil {
				return err
			}
			if !held {
				return fmt.Errorf("condemned set %s was swept while this backup used its chunks: %w", set.ID.Short(), cairn.ErrConflict)
			}
		}
		s.mu.Lock()
		s.seen[set.ID] = true
		s.mu.Unlock()
		added = true
	}
	if !added {
		return nil
	}
	return s.writeMarker(ctx, objstore.PutOptions{})
}

// heartbeat refreshes the session; an error that means the backup may no
// longer commit is kept for check.
func (s *session) heartbeat(ctx context.Context) error {
	err := s.refresh(ctx)
	if errors.Is(err, cairn.ErrConflict) {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = err
		}
		s.mu.Unlock()
	}
	return err
}

// refreshLoop runs refresh at each tick when due says it is due, until stop
// is closed, ctx ends or the repository closes, and reports each refresh to
// Options.OnHeartbeat. A refresh cut short by ctx is not reported.
func (r *Repository) refreshLoop(ctx context.Context, stop <-chan struct{}, ticks <-chan time.Time, due func() bool, refresh func(context.Context) error) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-r.closing:
			return
		case <-ticks:
		}
		if !due() {
			continue
		}
		err := refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		if r.opts.OnHeartbeat != nil {
			r.opts.OnHeartbeat(err)
		}
	}
}

// check returns an error once the session can no longer be sure the
// garbage collector treats it as alive.
func (s *session) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	select {
	case <-s.r.closing:
		// The heartbeat has stopped.
		return errClosed
	default:
	}
	if age := s.r.now().Sub(s.lastRefresh); age > s.r.sessionTimeout()*2/3 {
		return fmt.Errorf("backup session not refreshed for %v (store unreachable?); a garbage collection may treat it as dead: %w", age.Round(time.Second), cairn.ErrConflict)
	}
	return nil
}

// first records that the backup references c and reports whether this is
// the first reference: the caller then decides (claim) whether c must be
// uploaded; later references share that decision.
func (s *session) first(c format.ChunkID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.used[c]; ok {
		return false
	}
	s.used[c] = struct{}{}
	return true
}

// claim records that the backup references chunk c and reports whether
// c must be uploaded: when it is not stored (known is false and no
// condemned set lists it), or when it may have been collected (a set
// listing it was swept). Every unswept condemned set the session has seen
// that lists c is held first, whether c is reused or uploaded again: a
// chunk may sit in several sets, and the sweep of any of them would
// delete it.
func (s *session) claim(ctx context.Context, c format.ChunkID, known bool) (upload bool, err error) {
	for {
		s.mu.Lock()
		sets := s.condemned[c]
		var pending []cairn.ID
		swept := s.gone[c]
		for _, set := range sets {
			switch {
			case s.swept[set]:
				swept = true
			case !s.held[set]:
				pending = append(pending, set)
			}
		}
		if len(pending) == 0 {
			// Every set is decided: record the use under the same lock, so
			// a refresh that adds a set after this sees the chunk in use.
			s.used[c] = struct{}{}
			s.mu.Unlock()
			return swept || len(sets) == 0 && !known && !s.gone[c], nil
		}
		s.mu.Unlock()
		for _, set := range pending {
			if _, err := s.decide(ctx, set); err != nil {
				return false, err
			}
		}
	}
}

// decide holds set, unless that is decided already, and reports whether
// it is held (its chunks are safe to reuse) rather than swept. When
// another goroutine is holding the set, decide waits for it to finish and
// takes its result; if it failed, decide holds the set itself.
func (s *session) decide(ctx context.Context, set cairn.ID) (held bool, err error) {
	for {
		s.mu.Lock()
		if s.held[set] || s.swept[set] {
			held := s.held[set]
			s.mu.Unlock()
			return held, nil
		}
		if busy, ok := s.holding[set]; ok {
			s.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		done := make(chan struct{})
		s.holding[set] = done
		s.mu.Unlock()

		safe, err := s.hold(ctx, set)

		s.mu.Lock()
		delete(s.holding, set)
		if err == nil {
			if safe {
				s.held[set] = true
			} else {
				s.swept[set] = true
			}
		}
		s.mu.Unlock()
		close(done)
		return safe, err
	}
}

// uploaded records that the backup references a chunk it has just stored.
func (s *session) uploaded(c format.ChunkID) {
	s.mu.Lock()
	s.used[c] = struct{}{}
	s.mu.Unlock()
}

// hold writes a hold on a condemned set (for decide, which makes sure one
// goroutine at a time holds a set) and reports whether the set's chunks
// are safe to reuse: true when no sweep had started by the time the hold
// was written (any later sweep sees the hold and stops), false when the
// set was or is being swept (after waiting for the sweep to end).
func (s *session) hold(ctx context.Context, set cairn.ID) (bool, error) {
	if err := s.r.putJSON(ctx, format.TypeMarker, holdName(set, s.id), struct{}{}, objstore.PutOptions{}); err != nil {
		return false, fmt.Errorf("holding condemned set %s: %w", set.Short(), err)
	}
	s.mu.Lock()
	s.holdObjects[set] = true
	s.mu.Unlock()
	for {
		// The next look is due a poll interval after this one starts, so a
		// test that has seen this look and advanced its clock that far
		// wakes the wait below however the two interleave.
		next := s.r.now().Add(sweepPoll)
		info, err := s.r.be.Stat(ctx, sweepingName(set))
		if errors.Is(err, cairn.ErrNotFound) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("checking condemned set %s: %w", set.Short(), err)
		}
		// A sweep is under way: wait for it to end, or for its marker to
		// go stale (the sweeper stops itself before that).
		now, err := s.r.storeNow(ctx)
		if err != nil {
			return false, err
		}
		if now.Sub(info.ModTime) > s.r.sessionTimeout() {
			return false, nil
		}
		if err := s.r.opts.Sleep(ctx, next); err != nil {
			return false, err
		}
	}
	if _, err := s.r.be.Stat(ctx, sweptName(set)); err == nil {
		return false, nil // swept
	} else if !errors.Is(err, cairn.ErrNotFound) {
		return false, fmt.Errorf("checking condemned set %s: %w", set.Short(), err)
	}
	if _, err := s.r.be.Stat(ctx, condemnedName(set)); errors.Is(err, cairn.ErrNotFound) {
		return false, nil // swept and gone
	} else if err != nil {
		return false, fmt.Errorf("checking condemned set %s: %w", set.Short(), err)
	}
	return true, nil
}

// remove ends the session: its holds and marker are deleted, so a later
// garbage collection may sweep what the session no longer needs.
func (s *session) remove(ctx context.Context) {
	s.mu.Lock()
	held := make([]cairn.ID, 0, len(s.holdObjects))
	for id := range s.holdObjects {
		held = append(held, id)
	}
	s.mu.Unlock()
	for _, set := range held {
		_ = s.r.be.Delete(ctx, holdName(set, s.id))
	}
	_ = s.r.be.Delete(ctx, sessionName(s.id))
}

// close stops the heartbeat and removes the session.
func (s *session) close(ctx context.Context) {
	close(s.stop)
	<-s.done
	s.remove(ctx)
}

// storeNow returns the store's current time: the modification time of an
// object written now. Comparing it with other objects' times avoids
// trusting clocks of different machines.
func (r *Repository) storeNow(ctx context.Context) (time.Time, error) {
	name := "gc/clock/" + cairn.NewID().String()
	if err := r.be.Put(ctx, name, nil, objstore.PutOptions{}); err != nil {
		return time.Time{}, fmt.Errorf("reading the store's clock: %w", err)
	}
	info, err := r.be.Stat(ctx, name)
	_ = r.be.Delete(ctx, name)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the store's clock: %w", err)
	}
	return info.ModTime, nil
}

type condemnedInfo struct {
	ID      cairn.ID
	ModTime time.Time
	// Swept: the set's chunks were deleted at SweptAt; the set stays
	// visible for twice the consistency margin so that no backup mistakes
	// a deleted chunk, still shown by a lagging listing, for a stored one.
	Swept   bool
	SweptAt time.Time
}

func (r *Repository) listCondemned(ctx context.Context) ([]condemnedInfo, error) {
	swept := map[cairn.ID]time.Time{}
	err := r.be.List(ctx, format.SweptPrefix, func(info objstore.ObjectInfo) error {
		if id, err := cairn.ParseID(strings.TrimPrefix(info.Name, format.SweptPrefix)); err == nil {
			swept[id] = info.ModTime
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing swept sets: %w", err)
	}
	var sets []condemnedInfo
	err = r.be.List(ctx, format.CondemnedPrefix, func(info objstore.ObjectInfo) error {
		id, err := cairn.ParseID(strings.TrimPrefix(info.Name, format.CondemnedPrefix))
		if err != nil {
			return nil // not ours
		}
		at, isSwept := swept[id]
		sets = append(sets, condemnedInfo{ID: id, ModTime: info.ModTime, Swept: isSwept, SweptAt: at})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing condemned sets: %w", err)
	}
	return sets, nil
}

func (r *Repository) readCondemned(ctx context.Context, set cairn.ID) ([]format.ChunkID, error) {
	plain, err := r.getSealed(ctx, format.TypeGCSet, condemnedName(set))
	if err != nil {
		return nil, fmt.Errorf("reading condemned set: %w", err)
	}
	return format.DecodeIDSet(plain)
}
