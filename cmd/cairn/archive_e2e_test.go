package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/pgwal"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/jackc/pgx/v5"
)

// archiveOf reads an instance's archive state and window from the API.
func (p *svcProc) archiveOf(id string) (archive map[string]any, window map[string]any) {
	p.t.Helper()
	var got struct {
		Instance struct {
			Archive map[string]any `json:"archive"`
			Window  map[string]any `json:"recoverable_window"`
		} `json:"instance"`
	}
	p.callDB("GET", "/instances/"+id, nil, &got)
	return got.Instance.Archive, got.Instance.Window
}

// waitArchived waits until the instance's archive holds a transaction
// that ended at or after at, and returns its state then.
func (p *svcProc) waitArchived(id string, at time.Time) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for {
		a, _ := p.archiveOf(id)
		if a != nil {
			if s, _ := a["last_transaction"].(string); s != "" {
				if last, err := time.Parse(time.RFC3339Nano, s); err == nil && !last.Before(at) {
					return a
				}
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the archive never held the transaction of %s: %v\n%s", at, a, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restoreTo asks for a new instance restored from source's archive to
// the instant at, waits until the service has settled, and returns the
// instance, which must be ACTIVE and made from backup wantBackup.
func (p *svcProc) restoreTo(name, datastore, version, source string, at time.Time, wantBackup any) map[string]any {
	p.t.Helper()
	var created struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": name, "datastore": map[string]any{"type": datastore, "version": version},
		"restorePoint": map[string]any{"instance": source, "point_in_time": at.UTC().Format(time.RFC3339Nano)}}}, &created); code != 202 {
		p.t.Fatalf("point-in-time restore %s: %d %v", name, code, created)
	}
	insts, _ := p.dbSettled()
	restored := byID(p.t, insts, created.Instance["id"].(string))
	if restored["status"] != "ACTIVE" || restored["backup_id"] != wantBackup {
		p.t.Fatalf("restored instance %v (want ACTIVE, from backup %v)", restored, wantBackup)
	}
	return restored
}

// commitRows commits n rows, one transaction each, into stamps and
// returns the clock_timestamp() of the last (at or before its commit).
func commitRows(t *testing.T, conn *pgx.Conn, from, n int) time.Time {
	t.Helper()
	var at time.Time
	for i := from; i < from+n; i++ {
		if err := conn.QueryRow(t.Context(), "INSERT INTO stamps (id) VALUES ($1) RETURNING at", i).Scan(&at); err != nil {
			t.Fatal(err)
		}
	}
	return at
}

// TestWALArchive: a PostgreSQL instance's WAL streams into the archive
// as it is written; a backup opens a recoverable window that reaches the
// last commit; a service killed with -9 comes back and the archive goes
// on from where the store says it ended, with the commits made
// meanwhile and no hole; every commit decodes from the stored pieces;
// repo check reads them clean.
func TestWALArchive(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	in := p.createInstance("arch", "postgresql", "15")
	id := in["id"].(string)
	conn := pgConn(t, in)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	a := p.waitArchived(id, commitRows(t, conn, 0, 50))
	if a["state"] != "streaming" || a["timeline"] != float64(1) || a["container"] != "volumebackups" {
		t.Fatalf("archive %v", a)
	}
	if _, w := p.archiveOf(id); w != nil {
		t.Fatalf("a window without a backup: %v", w)
	}

	backup := completedBackupOf(p, id, "snapshot")
	last := commitRows(t, conn, 50, 50)
	p.waitArchived(id, last)
	_, w := p.archiveOf(id)
	if w == nil {
		t.Fatal("no recoverable window after a backup")
	}
	from, err1 := time.Parse(time.RFC3339Nano, w["from"].(string))
	to, err2 := time.Parse(time.RFC3339Nano, w["to"].(string))
	bt, err3 := time.Parse(time.RFC3339Nano, backup["data_timestamp"].(string))
	if err1 != nil || err2 != nil || err3 != nil || !from.Equal(bt) || to.Before(last) {
		t.Fatalf("window %v, backup at %s, last commit at %s", w, backup["data_timestamp"], last)
	}

	// The service dies; the database goes on; the archive catches up.
	p.kill()
	down := commitRows(t, conn, 100, 50)
	p = startService(t, data)
	p.waitArchived(id, down)
	if _, w := p.archiveOf(id); w == nil {
		t.Fatal("no window after the restart")
	}
	// Deleting the only backup closes the window.
	p.callDB("DELETE", "/backups/"+backup["id"].(string), nil, nil)
	p.dbGone("backups", backup["id"].(string))
	if _, w := p.archiveOf(id); w != nil {
		t.Fatalf("a window without a backup: %v", w)
	}
	p.stop()

	// The store alone: one stretch of WAL without a hole, every commit in
	// it, and nothing damaged.
	pieces, span, commits := archiveInStore(t, data, id)
	if commits < 150 {
		t.Fatalf("decoding the archive: %d commits", commits)
	}
	t.Logf("the archive: %d pieces, %s to %s, %d commits", pieces, dbagentLSN(span.Start), dbagentLSN(span.End), commits)
	repoCheck(t, data)
}

// archiveInStore reads instance id's archive from data's default
// container alone: its description names the instance, its timeline 1
// is one stretch without a hole, and every byte of it decodes. It
// returns the number of pieces, the stretch and the commits found.
func archiveInStore(t *testing.T, data, id string) (int, repo.LogSpan, int) {
	t.Helper()
	be, err := local.New(filepath.Join(data, "backups", "volumebackups"), false)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(data, "backup.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(t.Context(), be, repo.Secret{Kind: format.KeyKindFile, Bytes: key}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	aid, err := service.ArchiveID(id)
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.ArchiveInfo(t.Context(), aid)
	if err != nil || info.Instance != id || info.Datastore != "postgresql" || info.SystemID == "" {
		t.Fatalf("archive info %+v %v", info, err)
	}
	pieces, odd, err := r.LogPieces(t.Context(), aid)
	if err != nil || len(odd) != 0 {
		t.Fatalf("pieces: %v %v", odd, err)
	}
	spans := repo.LogSpans(pieces)
	if len(spans) != 1 || spans[0].Log != "wal-00000001" {
		t.Fatalf("the archive's spans: %+v", spans)
	}
	dec := pgwal.NewDecoder(spans[0].Start, 16<<20, false)
	pos, commits := spans[0].Start, 0
	for _, pc := range pieces {
		if pc.End <= pos {
			continue
		}
		_, body, err := r.ReadLogPiece(t.Context(), pc)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range dec.Write(body[pos-pc.Start:]) {
			if e.Kind == pgwal.Commit {
				commits++
			}
		}
		pos = pc.End
	}
	if st := dec.Stats(); st.Damaged != 0 {
		t.Fatalf("decoding the archive: %+v", st)
	}
	return len(pieces), spans[0], commits
}

func dbagentLSN(v uint64) string { return dbagent.LSN(v).String() }

// completedBackupOf takes a backup of an instance by strategy, waits for
// it and returns it COMPLETED.
func completedBackupOf(p *svcProc, instance, strategy string) map[string]any {
	p.t.Helper()
	bid, err := backupRequest(instance, strategy)(p)
	if err != nil {
		p.t.Fatal(err)
	}
	_, backups := p.dbSettled()
	b := byID(p.t, backups, bid)
	if b["status"] != "COMPLETED" {
		p.t.Fatalf("backup %s: %v", bid, b)
	}
	return b
}

// TestPointInTimeRestore: rows committed in three groups, then a
// mistake (the table dropped); a new instance restored to the instant
// between the second and third groups holds exactly the first two, and
// takes writes; an instant outside the recoverable window is refused
// with the window named.
func TestPointInTimeRestore(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	m := makeMistake(t, p, "pitr-src")
	id, backup, target := m.id, m.backup, m.target

	// Outside the window: refused, naming it.
	var refused map[string]any
	code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "too-early", "datastore": map[string]any{"type": "postgresql", "version": "15"},
		"restorePoint": map[string]any{"instance": id, "point_in_time": backupTime(t, backup).Add(-time.Hour).Format(time.RFC3339Nano)}}}, &refused)
	if code != 400 || !strings.Contains(fmt.Sprint(refused), "recoverable window") {
		t.Fatalf("a point outside the window: %d %v", code, refused)
	}

	restored := p.restoreTo("pitr", "postgresql", "15", id, target, backup["id"])
	rc := pgConn(t, restored)
	ids := stampIDs(t, rc)
	want := m.want()
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("restored rows %v, want %v", ids, want)
	}
	if _, err := rc.Exec(t.Context(), "INSERT INTO stamps (id) VALUES (999)"); err != nil {
		t.Fatalf("the restored instance takes no write: %v", err)
	}

	// A WAL piece gone from the store between the backup and the
	// instant: the restore is refused, and the window shown shrinks.
	aid, err := service.ArchiveID(id)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "backups", "volumebackups", "logs", aid.String(), "wal-00000001")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 3 {
		t.Fatalf("the archive's pieces: %d, %v", len(entries), err)
	}
	if err := os.Remove(filepath.Join(dir, entries[len(entries)/2].Name())); err != nil {
		t.Fatal(err)
	}
	var gapped map[string]any
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "across-a-gap", "datastore": map[string]any{"type": "postgresql", "version": "15"},
		"restorePoint": map[string]any{"instance": id, "point_in_time": target.UTC().Format(time.RFC3339Nano)}}}, &gapped); code != 400 {
		t.Fatalf("a restore across a missing piece: %d %v", code, gapped)
	}
	deadline := time.Now().Add(pointTimeout)
	for {
		a, w := p.archiveOf(id)
		gaps, _ := a["gaps"].([]any) // absent while none is known
		if w == nil && len(gaps) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive never showed the missing piece: %v, window %v", a, w)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func backupTime(t *testing.T, b map[string]any) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, b["data_timestamp"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// TestArchiveKill9 kills the service with -9 at the archive's steps:
// right after a piece was stored (before the server was told), and
// right after a whole segment replaced its pieces (before all of them
// were deleted). Commits go on while it is down; after each restart the
// archive catches up, and the store holds one stretch of WAL without a
// hole in which every commit decodes.
func TestArchiveKill9(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	in := p.createInstance("arch-kill", "postgresql", "15")
	id := in["id"].(string)
	conn := pgConn(t, in)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), pad text)"); err != nil {
		t.Fatal(err)
	}
	p.waitArchived(id, commitRows(t, conn, 0, 10))
	p.stop()
	next := 10
	for _, at := range []string{"store.put logs/#1", "store.put logs/#4", "store.delete logs/#1"} {
		point := newHookPoint(t, at)
		p = startServiceEnv(t, data, point.env())
		if strings.HasPrefix(at, "store.put") {
			// Enough WAL for pieces, and for two whole segments (32 MiB
			// of rows that do not compress).
			if _, err := conn.Exec(t.Context(), fmt.Sprintf("INSERT INTO stamps (id, pad) SELECT g, "+
				"(SELECT string_agg(md5(g::text || ':' || k::text), '') FROM generate_series(1, 300) k) FROM generate_series(%d, %d) g",
				next, next+4000)); err != nil {
				t.Fatal(err)
			}
			next += 4001
		} else {
			// A segment this service stores from its start (after a
			// switch), in pieces while the archive keeps up (two commits,
			// each archived), then made whole by a second switch: it is
			// stored again whole and its pieces deleted.
			super := pgSuperConn(t, in)
			if _, err := super.Exec(t.Context(), "SELECT pg_switch_wal()"); err != nil {
				t.Fatal(err)
			}
			p.waitArchived(id, commitRows(t, conn, next, 5))
			p.waitArchived(id, commitRows(t, conn, next+5, 5))
			next += 10
			if _, err := super.Exec(t.Context(), "SELECT pg_switch_wal()"); err != nil {
				t.Fatal(err)
			}
		}
		point.reached(p.done, p.log.String)
		p.kill()
		down := commitRows(t, conn, next, 20)
		next += 20
		p = startService(t, data)
		p.waitArchived(id, down)
		p.stop()
		t.Logf("killed at %s: caught up", at)
	}

	pieces, span, commits := archiveInStore(t, data, id)
	if commits < 70 {
		t.Fatalf("decoding the archive: %d commits", commits)
	}
	t.Logf("the archive: %d pieces over %s to %s, %d commits", pieces, dbagentLSN(span.Start), dbagentLSN(span.End), commits)
	repoCheck(t, data)
}

// TestWALArchiveTrimmed: two backups of a PostgreSQL instance, WAL
// segments switched between them; deleting the older deletes the
// archive's pieces before the newer one's segment and nothing after: the
// store holds one stretch without a hole, the window starts at the
// newer backup, and a restore to an instant after it holds exactly the
// rows committed by then.
func TestWALArchiveTrimmed(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	in := p.createInstance("arch-trim", "postgresql", "15")
	id := in["id"].(string)
	conn := pgConn(t, in)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	commitRows(t, conn, 0, 20)
	b1 := completedBackupOf(p, id, "snapshot")
	for i := range 3 {
		commitRows(t, conn, 20+10*i, 10)
		if _, err := pgSuperConn(t, in).Exec(t.Context(), "SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
	}
	b2 := completedBackupOf(p, id, "snapshot")
	target := commitRows(t, conn, 50, 10)
	p.waitArchived(id, commitRows(t, conn, 60, 10))
	aid, err := service.ArchiveID(id)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "backups", "volumebackups", "logs", aid.String(), "wal-00000001")
	count := func() int {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := count()
	p.callDB("DELETE", "/backups/"+b1["id"].(string), nil, nil)
	p.dbGone("backups", b1["id"].(string))
	p.dbSettled() // the trim follows the row's deletion, in the same task
	after := count()
	if after >= before || !strings.Contains(p.log.String(), "trimmed an instance's archive") {
		t.Fatalf("%d pieces before b1's deletion, %d after", before, after)
	}
	if _, w := p.archiveOf(id); w == nil || w["from"] != b2["data_timestamp"] {
		t.Fatalf("the window after b1's deletion: %v, want from b2's %s", w, b2["data_timestamp"])
	}
	restored := p.restoreTo("arch-trim-pitr", "postgresql", "15", id, target, b2["id"])
	// target is row 59's clock_timestamp(), taken before its commit:
	// rows 0 to 58 were committed by then, row 59 after.
	if ids := stampIDs(t, pgConn(t, restored)); len(ids) != 59 || ids[0] != 0 || ids[58] != 58 {
		t.Fatalf("restored rows %v, want 0 to 58", ids)
	}
	p.stop()
	pieces, span, _ := archiveInStore(t, data, id)
	t.Logf("the archive after the trim: %d pieces (%d files before), %s to %s", pieces, before, dbagentLSN(span.Start), dbagentLSN(span.End))
	repoCheck(t, data)
}
