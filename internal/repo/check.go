package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// CheckOptions select how deep a check reads.
type CheckOptions struct {
	// ReadData reads and verifies every stored chunk.
	ReadData bool
	// ReadDataSubset, in (0,1], reads that share of the referenced chunks,
	// chosen at random.
	ReadDataSubset float64
	Progress       *Progress
}

// Problem kinds.
const (
	ProblemConfig            = "config"
	ProblemKey               = "unreadable-key"
	ProblemManifest          = "unreadable-manifest"
	ProblemIndex             = "unreadable-index"
	ProblemMissingChunk      = "missing-chunk"
	ProblemCorruptChunk      = "corrupt-chunk"
	ProblemCorruptUnrefChunk = "corrupt-unreferenced-chunk"
)

// Problem is one thing wrong with a repository.
type Problem struct {
	Kind    string     `json:"kind"`
	Object  string     `json:"object"`
	Detail  string     `json:"detail"`
	Backups []cairn.ID `json:"affected_backups,omitempty"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Kind, p.Object, p.Detail)
	if len(p.Backups) > 0 {
		ids := make([]string, len(p.Backups))
		for i, id := range p.Backups {
			ids[i] = id.Short()
		}
		s += " (affects backups " + strings.Join(ids, ", ") + ")"
	}
	return s
}

// CheckReport is the result of a check. The repository is healthy when
// Problems is empty; Notes are informational.
type CheckReport struct {
	Backups       int       `json:"backups"`
	Chunks        int       `json:"chunks"`
	ChunksRead    int       `json:"chunks_read"`
	LogPieces     int       `json:"log_pieces,omitempty"`
	BytesRead     int64     `json:"bytes_read"`
	Problems      []Problem `json:"problems"`
	Notes         []string  `json:"notes,omitempty"`
	AffectedCount int       `json:"affected_backups"`
}

// Check verifies the repository's structure and, as asked, its data. It
// returns an error only when it could not run; what it finds is in the
// report.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{}
	var mu sync.Mutex
	problem := func(p Problem) {
		mu.Lock()
		rep.Problems = append(rep.Problems, p)
		mu.Unlock()
	}

	if err := r.checkKeys(ctx, problem); err != nil {
		return nil, err
	}

	list, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	for name, err := range list.Damaged {
		problem(Problem{Kind: ProblemManifest, Object: name, Detail: err.Error()})
	}
	rep.Backups = len(list.Backups) + len(list.Damaged)

	// Which backups use each chunk, and how many of its bytes.
	type use struct {
		backups []int
		end     int64
	}
	uses := map[format.ChunkID]*use{}
	err = forEachParallel(ctx, len(list.Backups), r.opts.Transfers, func(ctx context.Context, i int) error {
		m := list.Backups[i]
		entries, err := r.Index(ctx, m)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			problem(Problem{Kind: ProblemIndex, Object: manifestName(m.ID), Detail: err.Error(), Backups: []cairn.ID{m.ID}})
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range entries {
			if e.Zero {
				continue
			}
			u := uses[e.Chunk]
			if u == nil {
				u = &use{}
				uses[e.Chunk] = u
			}
			if len(u.backups) == 0 || u.backups[len(u.backups)-1] != i {
				u.backups = append(u.backups, i)
			}
			u.end = max(u.end, e.ChunkOffset+e.Length)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	affected := func(c format.ChunkID) []cairn.ID {
		u := uses[c]
		if u == nil {
			return nil
		}
		ids := make([]cairn.ID, len(u.backups))
		for i, b := range u.backups {
			ids[i] = list.Backups[b].ID
		}
		return ids
	}

	stored, err := r.storedChunks(ctx)
	if err != nil {
		return nil, err
	}
	rep.Chunks = len(stored)
	for c := range uses {
		if _, ok := stored[c]; !ok {
			problem(Problem{Kind: ProblemMissingChunk, Object: c.ObjectName(), Detail: "referenced but not stored", Backups: affected(c)})
		}
	}

	// Read data.
	var toRead []format.ChunkID
	switch {
	case opts.ReadData:
		for c := range stored {
			toRead = append(toRead, c)
		}
	case opts.ReadDataSubset > 0:
		for c := range uses {
			if _, ok := stored[c]; ok && rand.Float64() < opts.ReadDataSubset {
				toRead = append(toRead, c)
			}
		}
	}
	slices.SortFunc(toRead, func(a, b format.ChunkID) int { return strings.Compare(string(a[:]), string(b[:])) })
	p := orDiscard(opts.Progress)
	for _, c := range toRead {
		p.add(&p.Total, stored[c])
	}
	err = forEachParallel(ctx, len(toRead), max(r.opts.Workers, r.opts.Transfers), func(ctx context.Context, i int) error {
		c := toRead[i]
		end := int64(0)
		if u := uses[c]; u != nil {
			end = u.end
		}
		n, err := r.verifyChunk(ctx, c, end)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mu.Lock()
		rep.ChunksRead++
		rep.BytesRead += int64(n)
		mu.Unlock()
		p.add(&p.Done, stored[c])
		if err != nil {
			if errors.Is(err, cairn.ErrNotFound) {
				return nil // deleted by a concurrent gc since the listing
			}
			kind := ProblemCorruptChunk
			if uses[c] == nil {
				kind = ProblemCorruptUnrefChunk
			}
			problem(Problem{Kind: kind, Object: c.ObjectName(), Detail: err.Error(), Backups: affected(c)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	if err := r.checkLogs(ctx, opts, problem, rep); err != nil {
		return nil, err
	}
	r.checkNotes(ctx, rep, len(uses), len(stored))
	slices.SortFunc(rep.Problems, func(a, b Problem) int {
		return strings.Compare(a.Kind+a.Object, b.Kind+b.Object)
	})
	seen := map[cairn.ID]bool{}
	for _, p := range rep.Problems {
		for _, id := range p.Backups {
			seen[id] = true
		}
	}
	rep.AffectedCount = len(seen)
	return rep, nil
}

func (r *Repository) checkKeys(ctx context.Context, problem func(Problem)) error {
	var names []string
	if err := r.be.List(ctx, format.KeysPrefix, func(info objstore.ObjectInfo) error {
		names = append(names, info.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("listing keys: %w", err)
	}
	for _, name := range names {
		data, err := objstore.ReadAll(ctx, r.be, name, 0, -1)
		if errors.Is(err, cairn.ErrNotFound) {
			continue
		}
		if err == nil {
			var k *format.KeyFile
			k, err = format.DecodeKeyFile(data)
			if err == nil && keyName(k.ID) != name {
				err = fmt.Errorf("key file names key %s: %w", k.ID, cairn.ErrCorrupt)
			}
		}
		if err != nil {
			problem(Problem{Kind: ProblemKey, Object: name, Detail: err.Error()})
		}
	}
	return nil
}

// checkNotes adds what is worth knowing but not wrong.
func (r *Repository) checkNotes(ctx context.Context, rep *CheckReport, referenced, stored int) {
	if unref := stored - referenced; unref > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d stored chunks are not referenced by any backup (gc removes them)", unref))
	}
	if sessions, err := r.sessions(ctx); err == nil && len(sessions) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d backup sessions are running or were interrupted (gc removes interrupted ones after %v)", len(sessions), r.sessionTimeout()))
	}
	if sets, err := r.listCondemned(ctx); err == nil {
		waiting := 0
		for _, s := range sets {
			if !s.Swept {
				waiting++
			}
		}
		if waiting > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d condemned chunk sets wait for a later gc", waiting))
		}
	}
}

// verifyChunk reads chunk c and checks it: its checksum, its
// authentication, that its content hashes to its name, and that it holds
// at least end bytes (what backups use of it). A chunk is read again
// before it is called damaged: a flip on the way is not damage at rest.
// It returns the stored size read.
func (r *Repository) verifyChunk(ctx context.Context, c format.ChunkID, end int64) (int, error) {
	var data []byte
	var err error
	for attempt := 0; attempt < fetchAttempts; attempt++ {
		data, err = objstore.ReadAll(ctx, r.be, c.ObjectName(), 0, -1)
		if err == nil {
			err = format.VerifyChecksum(data)
		}
		if err == nil {
			var plain []byte
			plain, err = r.sealer.Open(nil, format.TypeChunk, c.ObjectName(), data, r.chunkLimit())
			switch {
			case err != nil:
			case format.ChunkID(r.mk.NewHasher().Sum(plain)) != c:
				err = fmt.Errorf("content does not match its name: %w", cairn.ErrCorrupt)
			case int64(len(plain)) < end:
				err = fmt.Errorf("holds %d bytes, backups use %d: %w", len(plain), end, cairn.ErrCorrupt)
			}
		}
		if !errors.Is(err, cairn.ErrCorrupt) {
			break
		}
	}
	return len(data), err
}
