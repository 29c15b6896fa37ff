package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/catalogtest"
)

func open(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) catalog.Store {
		return open(t, filepath.Join(t.TempDir(), "catalog.db"))
	})
}

// TestPragmas: the writer commits durably (WAL, synchronous=FULL) and
// checks foreign keys.
func TestPragmas(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "catalog.db"))
	ctx := t.Context()
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"synchronous", "2"},
		{"foreign_keys", "1"},
		{"busy_timeout", fmt.Sprint(busyTimeout.Milliseconds())},
	} {
		var got string
		if err := s.write.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("PRAGMA %s = %s, want %s", c.pragma, got, c.want)
		}
	}
}

// TestOddPath: any character may appear in the file's path.
func TestOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%20chars&_txlock=x")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cat?alog.db")
	s := open(t, path)
	if err := s.Update(t.Context(), func(tx catalog.Tx) error {
		return tx.InsertProject(t.Context(), cairn.Project{ID: "p", Name: "p"})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not at its path: %v", err)
	}
}

func insertProject(ctx context.Context, s catalog.Store, id string) error {
	return s.Update(ctx, func(tx catalog.Tx) error {
		return tx.InsertProject(ctx, cairn.Project{ID: id, Name: id, Quota: cairn.Unlimited, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)})
	})
}

func wantProjects(t *testing.T, s catalog.Store, n int) {
	t.Helper()
	ctx := t.Context()
	err := s.View(ctx, func(tx catalog.Tx) error {
		for i := range n {
			if _, err := tx.Project(ctx, fmt.Sprintf("p%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReopen: what an Update committed is there after Close and Open.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := insertProject(t.Context(), s, "p0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantProjects(t, open(t, path), 1)
}

// TestCommittedSurvivesKill: the rows of committed Updates are there
// after the process that made them is killed with SIGKILL.
func TestCommittedSurvivesKill(t *testing.T) {
	const n = 50
	if path := os.Getenv("CAIRN_TEST_SQLITE_KILL"); path != "" {
		ctx := context.Background()
		s, err := Open(ctx, path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		for i := range n {
			if err := insertProject(ctx, s, fmt.Sprintf("p%d", i)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCommittedSurvivesKill$")
	cmd.Env = append(os.Environ(), "CAIRN_TEST_SQLITE_KILL="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, want killed by SIGKILL; output:\n%s", err, out)
	}
	wantProjects(t, open(t, path), n)
}

// TestTwoStoresOneFile: two Stores on one file (as two processes would
// be) make concurrent Updates without a lock error or a lost update.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	a, b := open(t, path), open(t, path)
	ctx := t.Context()
	if err := insertProject(ctx, a, "p"); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for i := range workers {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for range each {
				err := s.Update(ctx, func(tx catalog.Tx) error {
					p, err := tx.Project(ctx, "p")
					if err != nil {
						return err
					}
					p.Quota.Volumes++
					return tx.UpdateProject(ctx, p)
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	err := b.View(ctx, func(tx catalog.Tx) error {
		p, err := tx.Project(ctx, "p")
		if err == nil && p.Quota.Volumes != cairn.Unlimited.Volumes+workers*each {
			err = fmt.Errorf("quota.volumes %d after %d increments from %d", p.Quota.Volumes, workers*each, cairn.Unlimited.Volumes)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
}

// versions returns the schema_migrations rows of the file at path.
func versions(t *testing.T, path string) []int64 {
	t.Helper()
	db, err := openPool(path, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestMigrationsIdempotent(t *testing.T) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v, %v", files, err)
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	for range 3 {
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	vs := versions(t, path)
	if len(vs) != len(files) || vs[0] != 1 {
		t.Errorf("schema_migrations %v after 3 opens, want one row for each of %v", vs, files)
	}
}

func TestTooNewSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := openPool(path, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), path)
	if !errors.Is(err, cairn.ErrUnsupported) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a schema from the future: %v, want ErrUnsupported", err)
	}
	t.Log(err)
}

// TestSchedulerQueryPlans: the scheduler's reads go through their
// indexes in their order, with no sort: the due policies (a sort per
// batch made 10,000 policies due at once cost 40 sorts of 10,000 rows),
// and the firing slots (without the partial index, every slot kept,
// about 100 a policy, would be read at each pass).
func TestSchedulerQueryPlans(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "catalog.db"))
	for _, tc := range []struct{ name, query, index string }{
		{"due policies", `SELECT * FROM policies WHERE enabled = 1 AND next_fire_at <= 0 ORDER BY next_fire_at, id LIMIT 256`, "policies_due"},
		// FiringPolicySlots: the state is a literal, so the partial
		// index applies.
		{"firing slots", `SELECT * FROM policy_slots WHERE state = 'firing' ORDER BY slot_at, policy_id LIMIT 256`, "policy_slots_firing"},
	} {
		rows, err := s.write.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		all := strings.Join(plan, "; ")
		if !strings.Contains(all, "INDEX "+tc.index) || strings.Contains(all, "TEMP B-TREE") {
			t.Fatalf("the %s' plan: %s", tc.name, all)
		}
	}
}
