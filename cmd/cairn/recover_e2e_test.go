package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/volumectl"
	"github.com/jackc/pgx/v5"
)

// stampIDs returns the ids of table stamps, in order, or nil when the
// table does not exist.
func stampIDs(t *testing.T, conn *pgx.Conn) []int {
	t.Helper()
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass('stamps') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return nil
	}
	rows, err := conn.Query(t.Context(), "SELECT id FROM stamps ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func idRange(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// recoverTo asks for a recover of instance id to at (from backup, when
// not ""), waits for the service to settle and returns the instance.
func (p *svcProc) recoverTo(id string, at time.Time, backup string) map[string]any {
	p.t.Helper()
	body := map[string]any{"point_in_time": at.UTC().Format(time.RFC3339Nano)}
	if backup != "" {
		body["backup"] = backup
	}
	var out struct {
		Recovery map[string]any `json:"recovery"`
	}
	if code := p.callDB("POST", "/instances/"+id+"/recover", map[string]any{"recovery": body}, &out); code != 202 {
		p.t.Fatalf("recover: %d %v", code, out)
	}
	if out.Recovery["status"] != "RUNNING" || out.Recovery["instance_status"] != "RECOVER" {
		p.t.Fatalf("recover answered %v", out.Recovery)
	}
	insts, _ := p.dbSettled()
	return byID(p.t, insts, id)
}

// mistake is the scenario of the point-in-time tests: an instance whose
// table stamps got rows in three groups (0-19 before its snapshot
// backup, 100-119, 200-219), then a mistake (the table dropped, and
// after_mistake made with a row), all archived. target lies between the
// second and third groups: a recovery to it holds want.
type mistake struct {
	in     map[string]any
	id     string
	backup map[string]any
	target time.Time
	at     time.Time // the mistake's last commit
}

// want is the ids of stamps at the target.
func (mistake) want() []int { return append(idRange(0, 20), idRange(100, 20)...) }

func makeMistake(t *testing.T, p *svcProc, name string) mistake {
	t.Helper()
	m := mistake{in: p.createInstance(name, "postgresql", "15")}
	m.id = m.in["id"].(string)
	conn := pgConn(t, m.in)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	commitRows(t, conn, 0, 20)
	m.backup = completedBackupOf(p, m.id, "snapshot")
	commitRows(t, conn, 100, 20)
	if err := conn.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&m.target); err != nil {
		t.Fatal(err)
	}
	commitRows(t, conn, 200, 20)
	if _, err := conn.Exec(t.Context(), "DROP TABLE stamps"); err != nil {
		t.Fatal(err)
	}
	m.at = commitAfterMistake(t, conn)
	p.waitArchived(m.id, m.at)
	conn.Close(t.Context())
	return m
}

// TestRecoverInPlace: rows committed in three groups, then a mistake
// (the table dropped, another made). The instance recovered in place to
// the instant between the second and third groups holds exactly the
// first two, on its own port, and takes writes; its archive follows it
// onto the new timeline. Undone, the instance is back as the mistake
// left it. Recovered again with the backup's local snapshot gone, it is
// rebuilt from the repository, with the same rows.
func TestRecoverInPlace(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	m := makeMistake(t, p, "recover")
	in, id, backup, target := m.in, m.id, m.backup, m.target

	// Outside the window: refused, naming it; the instance runs on.
	var refused map[string]any
	if code := p.callDB("POST", "/instances/"+id+"/recover", map[string]any{"recovery": map[string]any{
		"point_in_time": backupTime(t, backup).Add(-time.Hour).Format(time.RFC3339Nano)}}, &refused); code != 400 ||
		!strings.Contains(fmt.Sprint(refused), "recoverable window") {
		t.Fatalf("a recover outside the window: %d %v", code, refused)
	}

	want := m.want()
	got := p.recoverTo(id, target, "")
	rc, _ := got["recovery"].(map[string]any)
	if got["status"] != "ACTIVE" || rc["status"] != "COMPLETED" || rc["recovered_from_backup"] != backup["id"] || rc["safety_snapshot"] == "" {
		t.Fatalf("after the recover: %v", got)
	}
	if fmt.Sprint(got["addresses"]) != fmt.Sprint(in["addresses"]) {
		t.Fatalf("the recovered instance listens on %v, not %v as before", got["addresses"], in["addresses"])
	}
	conn := pgConn(t, got)
	if ids := stampIDs(t, conn); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("rows after the recover %v, want %v", ids, want)
	}
	a := p.waitArchived(id, commitRows(t, conn, 999, 1))
	if gaps, _ := a["gaps"].([]any); a["timeline"] != float64(2) || len(gaps) != 0 {
		t.Fatalf("the archive after the recover: %v", a)
	}
	conn.Close(t.Context())

	// Undone: the instance as the mistake left it.
	got = p.undoRecover(id)
	conn = pgConn(t, got)
	if ids := stampIDs(t, conn); ids != nil {
		t.Fatalf("after the undo, the dropped table is back with %v", ids)
	}
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM after_mistake").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the undo, the table made after the mistake: %d rows, %v (want the 1 the mistake left)", n, err)
	}
	p.waitArchived(id, commitAfterMistake(t, conn))
	conn.Close(t.Context())

	// The backup's snapshot gone from the host (deleted on the data
	// plane's control socket, as a host that lost it): the recover writes
	// the backup's image over the volume from the repository.
	ctl := volumectl.NewClient(filepath.Join(data, "control.sock"))
	snap, err := volumectl.ResolveSnapshot(t.Context(), ctl, "dbbackup-"+backup["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.DeleteSnapshot(t.Context(), snap.ID); err != nil {
		t.Fatalf("deleting the backup's snapshot: %v", err)
	}
	got = p.recoverTo(id, target, backup["id"].(string))
	if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "COMPLETED" {
		t.Fatalf("after the recover from the repository: %v", got)
	}
	conn = pgConn(t, got)
	if ids := stampIDs(t, conn); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("rows after the recover from the repository %v, want %v", ids, want)
	}
	conn.Close(t.Context())
	if !strings.Contains(p.log.String(), "written over the volume where it differed") {
		t.Fatal("the second recover did not restore from the repository")
	}
	repoCheck(t, data)
}

// undoRecover asks for the undo of instance id's last recover, waits for
// the service to settle and returns the instance, which must be ACTIVE
// with its recovery UNDONE.
func (p *svcProc) undoRecover(id string) map[string]any {
	p.t.Helper()
	var undo struct {
		Recovery map[string]any `json:"recovery"`
	}
	if code := p.callDB("POST", "/instances/"+id+"/action", map[string]any{"undo_recover": map[string]any{}}, &undo); code != 202 ||
		undo.Recovery["status"] != "UNDOING" {
		p.t.Fatalf("undo: %d %v", code, undo)
	}
	insts, _ := p.dbSettled()
	got := byID(p.t, insts, id)
	if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "UNDONE" {
		p.t.Fatalf("after the undo: %v", got)
	}
	return got
}

// commitAfterMistake adds a row to table after_mistake (making it) and
// returns a time at or before the commit.
func commitAfterMistake(t *testing.T, conn *pgx.Conn) time.Time {
	t.Helper()
	if _, err := conn.Exec(t.Context(), "CREATE TABLE IF NOT EXISTS after_mistake (x int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var at time.Time
	if err := tx.QueryRow(t.Context(), "INSERT INTO after_mistake VALUES (1) RETURNING clock_timestamp()").Scan(&at); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	return at
}

// TestRecoverKill9 kills the service or the data plane with SIGKILL at
// the steps of a recover in place and of its undo: the task about to
// start, the server stopped and the volume detached, the safety
// snapshot recorded, the WAL staged, the server promoted. The service
// (started again, or starting another data plane) finishes the task:
// every recover ends with the instance at the instant, every undo with
// it as the mistake left it; none is left half done or stuck.
func TestRecoverKill9(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	m := makeMistake(t, p, "recover-kill")
	p.stop()
	recoverKill9(t, data, m.id, m.target, fmt.Sprint(m.want()), func(p *svcProc) []int {
		c := pgConn(t, p.waitHealthy(m.id))
		defer c.Close(t.Context())
		return stampIDs(t, c)
	})
}

// recoverKill9 runs the rounds of TestRecoverKill9 on the instance id of
// the service in data (stopped): rows reads the instance's stamps (nil
// when the table is gone), want is what a recover to target leaves.
func recoverKill9(t *testing.T, data, id string, target time.Time, want string, rows func(p *svcProc) []int) {
	recoverReq := func(p *svcProc) int {
		return p.callDB("POST", "/instances/"+id+"/recover", map[string]any{"recovery": map[string]any{
			"point_in_time": target.UTC().Format(time.RFC3339Nano)}}, nil)
	}
	undoReq := func(p *svcProc) int {
		return p.callDB("POST", "/instances/"+id+"/action", map[string]any{"undo_recover": map[string]any{}}, nil)
	}
	// check reads the settled instance: recovered to the instant, or (an
	// undo) back as the mistake left it.
	check := func(p *svcProc, round string, undo bool) {
		t.Helper()
		insts, _ := p.dbSettled()
		got := byID(t, insts, id)
		rc, _ := got["recovery"].(map[string]any)
		wantStatus := map[bool]string{false: "COMPLETED", true: "UNDONE"}[undo]
		if got["status"] != "ACTIVE" || rc["status"] != wantStatus {
			t.Fatalf("%s: instance %s, recovery %v (want ACTIVE and %s)\n%s", round, got["status"], rc, wantStatus, p.log.String())
		}
		ids := rows(p)
		switch {
		case !undo && fmt.Sprint(ids) != want:
			t.Fatalf("%s: rows %v, want %s", round, ids, want)
		case undo && ids != nil:
			t.Fatalf("%s: after the undo, the dropped table is back: %v", round, ids)
		}
	}
	rounds := []struct {
		at   string // of the data plane ("dbhost ...") or of the service
		undo bool
	}{
		{"catalog.task instance.recover running#1", false},
		{"dbhost detached#1", false},
		{"catalog.instance RECOVER#2", false}, // the safety snapshot recorded
		{"dbhost prepared#1", false},
		{"dbhost started#2", false}, // replaying, its WAL still coming (#1: the server's start at boot)
		{"dbhost recovered#1", false},
		{"catalog.task instance.undo_recover running#1", true},
		{"dbhost detached#1", true},
	}
	for i, r := range rounds {
		round := fmt.Sprintf("round %d (%s at %s)", i, map[bool]string{false: "recover", true: "undo"}[r.undo], r.at)
		if r.undo {
			// An undo needs a completed recover, made without the point.
			p := startService(t, data)
			p.waitHealthy(id)
			if code := recoverReq(p); code != 202 {
				t.Fatalf("%s: recover: %d", round, code)
			}
			check(p, round+", the recover before", false)
			p.stop()
		}
		// A fresh data plane, started by the hooked service, carries a
		// point of its own; the one started after the kill passes it by.
		stopTheDataPlane(t, data)
		point := newHookPoint(t, r.at).once()
		p := startServiceEnv(t, data, point.env())
		p.waitHealthy(id)
		req := recoverReq
		if r.undo {
			req = undoReq
		}
		if code := req(p); code != 202 {
			t.Fatalf("%s: %d", round, code)
		}
		point.reached(p.done, p.log.String)
		if strings.HasPrefix(r.at, "dbhost ") {
			dp := findDataPlane(t.Context(), data)
			if dp == nil {
				t.Fatalf("%s: no data plane", round)
			}
			if err := syscall.Kill(dp.info.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		} else {
			p.kill()
			p = startService(t, data)
		}
		check(p, round, r.undo)
		if !r.undo {
			// Back to the mistake for the next round.
			if code := undoReq(p); code != 202 {
				t.Fatalf("%s: undo after: %d", round, code)
			}
			check(p, round+", undone after", true)
		}
		p.stop()
		t.Logf("%s: done", round)
	}
}

// waitRestorePoint waits until the instance has a restore point whose
// data is consistent after at, and returns the newest point's time.
func (p *svcProc) waitRestorePoint(id string, at time.Time) time.Time {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for {
		var got struct {
			Instance struct {
				Points map[string]any `json:"restore_points"`
			} `json:"instance"`
		}
		p.callDB("GET", "/instances/"+id, nil, &got)
		if s, _ := got.Instance.Points["newest"].(string); s != "" {
			if newest, err := time.Parse(time.RFC3339Nano, s); err == nil && newest.After(at) {
				return newest
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no restore point after %v within %v: %v", at, pointTimeout, got.Instance.Points)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkFromRestorePoint checks that a recover of instance got completed
// from backup and started from a restore point taken from newest to
// target.
func checkFromRestorePoint(t *testing.T, got, backup map[string]any, newest, target time.Time) {
	t.Helper()
	rc, _ := got["recovery"].(map[string]any)
	if got["status"] != "ACTIVE" || rc["status"] != "COMPLETED" || rc["recovered_from_backup"] != backup["id"] {
		t.Fatalf("after the recover: %v", got)
	}
	base, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rc["base_time"]))
	if rp, _ := rc["restore_point"].(string); rp == "" || err != nil || base.Before(newest) || base.After(target) {
		t.Fatalf("the recover started from %v at %v (%v), want a restore point from %v to %v", rc["restore_point"], rc["base_time"], err, newest, target)
	}
}

// TestRecoverFromRestorePoint: with a restore point every 10 s, a
// recover in place to an instant after a restore point (and after the
// backup) reverts the volume to that point, not to the backup, and
// replays only the WAL after it: exact rows, and the recovery names the
// point and its time. Undone, the instance is as the mistake left it.
func TestRecoverFromRestorePoint(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data, "--restore-point-interval", "10s")
	in := p.createInstance("points", "postgresql", "15")
	id := in["id"].(string)
	conn := pgConn(t, in)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	commitRows(t, conn, 0, 20)
	backup := completedBackupOf(p, id, "snapshot")
	newest := p.waitRestorePoint(id, commitRows(t, conn, 100, 20))
	commitRows(t, conn, 200, 20)
	var target time.Time
	if err := conn.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&target); err != nil {
		t.Fatal(err)
	}
	commitRows(t, conn, 300, 20)
	if _, err := conn.Exec(t.Context(), "DROP TABLE stamps"); err != nil {
		t.Fatal(err)
	}
	p.waitArchived(id, commitAfterMistake(t, conn))
	conn.Close(t.Context())

	got := p.recoverTo(id, target, "")
	checkFromRestorePoint(t, got, backup, newest, target)
	if !strings.Contains(p.log.String(), "volume reverted to a restore point") {
		t.Fatal("the recover did not revert to the restore point")
	}
	conn = pgConn(t, got)
	want := append(append(idRange(0, 20), idRange(100, 20)...), idRange(200, 20)...)
	if ids := stampIDs(t, conn); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("rows after the recover from a restore point %v, want %v", ids, want)
	}
	p.waitArchived(id, commitRows(t, conn, 999, 1))
	conn.Close(t.Context())

	got = p.undoRecover(id)
	conn = pgConn(t, got)
	if ids := stampIDs(t, conn); ids != nil {
		t.Fatalf("after the undo, the dropped table is back with %v", ids)
	}
	conn.Close(t.Context())
	repoCheck(t, data)
}

// TestRecoverAfterUndo: a recover in place, undone with no commit on the
// recovered timeline, leaves the archive with a newer timeline than the
// one the server is back on (the second recover's, undone too, has a
// commit). A second recover follows the server's
// timeline, not the archive's newest: exact rows, not the mistake's
// state (the newest timeline holds no commit after the instant, and a
// recovery along it replayed everything it was given). With the
// instance deleted, a restore to a second after the undos reads the
// store alone, and still follows the history the server went back to
// (the undos marked the timelines they left in the archive's
// description), not the newest timeline.
func TestRecoverAfterUndo(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	m := makeMistake(t, p, "recover-undo")
	for round := range 2 {
		got := p.recoverTo(m.id, m.target, "")
		if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "COMPLETED" {
			t.Fatalf("round %d: after the recover: %v", round, got)
		}
		conn := pgConn(t, got)
		if ids := stampIDs(t, conn); fmt.Sprint(ids) != fmt.Sprint(m.want()) {
			t.Fatalf("round %d: rows after the recover %v, want %v", round, ids, m.want())
		}
		if round == 1 {
			// A commit on the second recover's timeline, archived: the
			// archive's newest timeline has history of its own.
			p.waitArchived(m.id, commitRows(t, conn, 500, 1))
		}
		conn.Close(t.Context())
		if code := p.callDB("POST", "/instances/"+m.id+"/action", map[string]any{"undo_recover": map[string]any{}}, nil); code != 202 {
			t.Fatalf("round %d: undo: %d", round, code)
		}
		insts, _ := p.dbSettled()
		got = byID(t, insts, m.id)
		if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "UNDONE" {
			t.Fatalf("round %d: after the undo: %v", round, got)
		}
		// The archiver streams timeline 1 again before the next recover.
		for deadline := time.Now().Add(pointTimeout); ; {
			a, _ := p.archiveOf(m.id)
			if a["state"] == "streaming" && a["timeline"] == float64(1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the archive after the undo: %v", round, a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A commit after the undos, on timeline 1, and the instance gone.
	insts, _ := p.dbSettled()
	conn := pgConn(t, byID(t, insts, m.id))
	// The point lies after the commit of 2 and before that of 3.
	var at, later time.Time
	if _, err := conn.Exec(t.Context(), "INSERT INTO after_mistake VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&at); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), "INSERT INTO after_mistake VALUES (3) RETURNING clock_timestamp()").Scan(&later); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	p.waitArchived(m.id, later)
	if code := p.callDB("DELETE", "/instances/"+m.id, nil, nil); code != 202 {
		t.Fatalf("instance delete: %d", code)
	}
	p.dbGone("instances", m.id)
	var created struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "after-undo", "datastore": map[string]any{"type": "postgresql", "version": "15"},
		"restorePoint": map[string]any{"instance": m.id, "point_in_time": at.UTC().Format(time.RFC3339Nano)}}}, &created); code != 202 {
		t.Fatalf("a restore to after the undos: %d %v", code, created)
	}
	insts, _ = p.dbSettled()
	restored := byID(t, insts, created.Instance["id"].(string))
	if restored["status"] != "ACTIVE" {
		t.Fatalf("restored instance %v", restored)
	}
	conn = pgConn(t, restored)
	defer conn.Close(t.Context())
	var stamps bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass('stamps') IS NOT NULL").Scan(&stamps); err != nil {
		t.Fatal(err)
	}
	var after []int
	rows, err := conn.Query(t.Context(), "SELECT x FROM after_mistake ORDER BY x")
	if err == nil {
		after, err = pgx.CollectRows(rows, pgx.RowTo[int])
	}
	if err != nil || stamps || fmt.Sprint(after) != "[1 2]" {
		t.Fatalf("restored along the wrong history: stamps table there %v, after_mistake %v (%v); want the server's own: no stamps, [1 2]", stamps, after, err)
	}
}
