package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// repoSlot is one container's repository: being opened until done is
// closed, then open (r) or failed (err).
type repoSlot struct {
	done chan struct{}
	r    Repository
	err  error
	// cancelled says the open failed because its caller's context
	// ended: the others waiting on it try again rather than share an
	// error that is not theirs.
	cancelled bool
}

// errStopped is the error of a repository asked for after Stop.
var errStopped = errors.New("the service is stopping")

// repoFor returns the open repository of a container. Repositories are
// opened one at a time per container, outside the service's lock: an
// open may take minutes (a store's authentication retried), and only
// the tasks of that container wait for it, each as long as its own
// context allows. A failed open is not kept: the next call tries again.
func (s *Service) repoFor(ctx context.Context, container string) (Repository, error) {
	for {
		s.reposMu.Lock()
		if s.reposStopped {
			s.reposMu.Unlock()
			return nil, fmt.Errorf("container %s: %w: %w", container, errStopped, cairn.ErrUnavailable)
		}
		slot, ok := s.repos[container]
		if !ok {
			slot = &repoSlot{done: make(chan struct{})}
			s.repos[container] = slot
			s.reposMu.Unlock()
			return s.openRepo(ctx, container, slot)
		}
		s.reposMu.Unlock()
		select {
		case <-slot.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("container %s: waiting for the repository to open: %w", container, ctx.Err())
		}
		if slot.cancelled {
			continue
		}
		if slot.err != nil {
			return nil, slot.err
		}
		return slot.r, nil
	}
}

// openRepo opens the repository of slot, which this caller added.
func (s *Service) openRepo(ctx context.Context, container string, slot *repoSlot) (Repository, error) {
	r, err := s.open(ctx, container)
	if err != nil {
		err = fmt.Errorf("container %s: %w", container, err)
	}
	var late Repository
	s.reposMu.Lock()
	if err == nil && s.reposStopped {
		// Stop has closed the others already: nothing may use this one.
		late, r = r, nil
		err = fmt.Errorf("container %s: %w: %w", container, errStopped, cairn.ErrUnavailable)
	}
	if err != nil {
		delete(s.repos, container)
	}
	slot.r, slot.err, slot.cancelled = r, err, err != nil && ctx.Err() != nil
	close(slot.done)
	s.reposMu.Unlock()
	if late != nil {
		if cerr := late.Close(); cerr != nil {
			s.log.Warn("closing a repository opened during shutdown", "container", container, "err", cerr)
		}
	}
	return r, err
}

// closeRepos closes the open repositories; later calls of repoFor fail.
// The task workers have stopped: no task uses them.
func (s *Service) closeRepos() {
	s.reposMu.Lock()
	s.reposStopped = true
	var open []*repoSlot
	var names []string
	for name, slot := range s.repos {
		select {
		case <-slot.done:
			if slot.err == nil {
				open = append(open, slot)
				names = append(names, name)
			}
		default:
			// Still opening (an API request's): its opener closes it.
		}
	}
	clear(s.repos)
	s.reposMu.Unlock()
	for i, slot := range open {
		if err := slot.r.Close(); err != nil {
			s.log.Warn("closing a repository", "container", names[i], "err", err)
		}
	}
}
