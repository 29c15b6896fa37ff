package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volume"
)

// dbList returns the instances or the backups of the database API.
func (p *svcProc) dbList(kind string) []map[string]any {
	p.t.Helper()
	var out map[string][]map[string]any
	if code := p.callDB("GET", "/"+kind, nil, &out); code != 200 {
		p.t.Fatalf("GET /%s: %d", kind, code)
	}
	return out[kind]
}

// dbSettled waits until no instance and no database backup is in a
// transient status and no task is pending or running, and returns the
// instances and the backups.
func (p *svcProc) dbSettled() (instances, backups []map[string]any) {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for {
		instances, backups = p.dbList("instances"), p.dbList("backups")
		busy := ""
		for _, in := range instances {
			if s := in["status"]; s == "BUILD" || s == "BACKUP" || s == "RECOVER" {
				busy = fmt.Sprintf("instance %s is %s", in["name"], s)
			}
		}
		for _, b := range backups {
			switch b["status"] {
			case "NEW", "BUILDING", "SAVING":
				busy = fmt.Sprintf("backup %s is %s", b["name"], b["status"])
			}
		}
		// A resource can be finished before its task is: the task must
		// have ended too, or the next stop cuts it short again.
		var tasks struct {
			Tasks []map[string]any `json:"tasks"`
		}
		if code := p.call("GET", "/tasks", nil, &tasks); code != 200 {
			p.t.Fatalf("GET /tasks: %d", code)
		}
		for _, task := range tasks.Tasks {
			if s := task["state"]; s == "pending" || s == "running" {
				busy = fmt.Sprintf("task %s of %s is %s", task["kind"], task["resource_id"], s)
			}
		}
		if busy == "" {
			return instances, backups
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s after %v: %s", busy, pointTimeout, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dbGone waits until the instance or backup id is no longer listed.
func (p *svcProc) dbGone(kind, id string) {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for {
		found := false
		for _, x := range p.dbList(kind) {
			found = found || x["id"] == id
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s %s still listed after %v: %s", kind, id, pointTimeout, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDatabaseKill9 kills the service with SIGKILL at the steps of
// database backups and restores, at points the binary's test hooks
// announce (the task claimed, the backup's row BUILDING or SAVING after
// the quiesced snapshot, chunks stored or read, the manifest stored, the
// restored instance's rows written), starts it again, and checks that
// every cut task finishes or fails cleanly: no instance or backup stays
// transient, the source database never stopped serving and is not left
// quiesced, every completed backup restores the source's rows, and once
// everything is deleted no volume, snapshot or mount is left and
// `repo check --read-data` is clean.
func TestDatabaseKill9(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	src, conn := sourceInstance(t, p)
	wantRows, wantSum := tableSum(t, conn)
	p.stop()

	// The requests run beside the kill, which may cut them (a hook that
	// stops the service can hold the request's own last step): they
	// return their errors rather than fail the test.
	backup := func(strategy string) func(p *svcProc) (string, error) { return backupRequest(src, strategy) }
	restore := restoreRequests()
	type op struct {
		name    string
		at      string // the hook point the service is killed at
		do      func(p *svcProc) (string, error)
		deletes bool // do deletes the resource it returns
		// prepare, when set, runs on the hooked service before do.
		prepare func(p *svcProc)
	}
	var ops []op
	// Every step of a snapshot backup: the task claimed, the row BUILDING
	// (the quiesced snapshot under way), SAVING (snapshot and record
	// saved), a chunk stored, the manifest stored, the row COMPLETED.
	for _, at := range []string{"catalog.task dbbackup.create running#1", "catalog.dbbackup BUILDING#1", "catalog.dbbackup SAVING#1",
		"store.put " + format.ChunksPrefix + "#3", "store.put " + format.BackupsPrefix + "#1", "catalog.dbbackup COMPLETED#1"} {
		ops = append(ops, op{"snapshot backup", at, backup("snapshot"), false, nil})
	}
	// Three logical backups: the two deletes below leave one.
	for _, at := range []string{"catalog.task dbbackup.create running#1", "catalog.dbbackup SAVING#1", "store.put " + format.ChunksPrefix + "#1"} {
		ops = append(ops, op{"logical backup", at, backup("logical"), false, nil})
	}
	for _, at := range []string{"catalog.task instance.create running#1", "catalog.instance BUILD#1"} {
		do, prepare := restore("snapshot")
		ops = append(ops, op{"restore from the local snapshot", at, do, false, prepare})
	}
	for _, at := range []string{"store.get " + format.ChunksPrefix + "#1", "catalog.instance ACTIVE#1"} {
		do, prepare := restore("logical")
		ops = append(ops, op{"restore from a dump", at, do, false, prepare})
	}
	for _, at := range []string{"catalog.task dbbackup.delete running#1", "store.delete " + format.BackupsPrefix + "#1"} {
		var id string // chosen before the request, which the kill may cut
		ops = append(ops, op{"delete a backup", at, func(p *svcProc) (string, error) {
			code, err := p.tryDB("DELETE", "/backups/"+id, nil, nil)
			if err != nil || code != 202 {
				return id, fmt.Errorf("backup delete: %d %v", code, err)
			}
			return id, nil
		}, true, func(p *svcProc) { id = completedBackup(p, "logical") }})
	}
	round := 0
	kill := func(o op) {
		t.Helper()
		at := o.at
		point := newHookPoint(t, at)
		p := startServiceEnv(t, data, point.env())
		if o.prepare != nil {
			o.prepare(p)
		}
		type result struct {
			id  string
			err error
		}
		res := make(chan result, 1)
		go func() {
			id, err := o.do(p)
			res <- result{id, err}
		}()
		point.reached(p.done, p.log.String)
		p.kill()
		// The request was answered before the kill, or cut by it.
		got := <-res
		id := got.id
		if got.err != nil {
			t.Logf("round %d: the request did not finish before the kill at %s: %v", round, at, got.err)
		}
		if o.deletes && id == "" {
			t.Fatalf("round %d: no resource to wait for", round)
		}
		// The database went on serving while the service was dead.
		if conn != nil {
			if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM t"); err != nil {
				t.Fatalf("round %d: the source database after the kill at %s: %v", round, at, err)
			}
		}
		p = startService(t, data)
		if o.deletes {
			p.dbGone("backups", id)
		}
		insts, backups := p.dbSettled()
		if !strings.Contains(p.log.String(), "task interrupted by a restart") {
			t.Fatalf("round %d: %s %s killed at %s, and no task was cut short: %s", round, o.name, id, at, p.log.String())
		}
		// A cut task was taken up again and finished.
		for _, in := range insts {
			if in["status"] != "ACTIVE" {
				t.Fatalf("round %d: killed at %s, instance %s is %s: %v", round, at, in["name"], in["status"], in["fail_reason"])
			}
		}
		for _, b := range backups {
			if b["status"] != "COMPLETED" {
				t.Fatalf("round %d: killed at %s, backup %s is %s: %v\n%s", round, at, b["name"], b["status"], b["fail_reason"], p.log.String())
			}
		}
		t.Logf("round %d: %s %s: killed at %s", round, o.name, id, at)
		p.stop()
		round++
	}
	for _, o := range ops {
		kill(o)
	}
	// The source is not left quiesced: it takes writes, and a backup now
	// completes.
	if _, err := conn.Exec(t.Context(), "CREATE TABLE after_kills (x int); DROP TABLE after_kills"); err != nil {
		t.Fatalf("writing to the source after the kills: %v", err)
	}

	// With the source gone, its snapshots go too: restores read the
	// repository, killed on their way as well.
	p = startService(t, data)
	if code := p.callDB("DELETE", "/instances/"+src, nil, nil); code != 202 {
		t.Fatalf("instance delete: %d", code)
	}
	p.dbGone("instances", src)
	p.stop()
	conn.Close(t.Context())
	conn = nil
	for _, at := range []string{"store.get " + format.ChunksPrefix + "#5", "catalog.instance BUILD#1"} {
		do, prepare := restore("snapshot")
		kill(op{"restore from the repository", at, do, false, prepare})
	}

	// Every instance is the source's rows; so is every completed backup.
	p = startService(t, data)
	insts, backups := p.dbSettled()
	checked := 0
	for _, in := range insts {
		if in["status"] != "ACTIVE" {
			continue
		}
		if rows, sum := tableSum(t, pgConn(t, in)); rows != wantRows || sum != wantSum {
			t.Fatalf("instance %s has %d rows (sum %s), want %d (%s)", in["name"], rows, sum, wantRows, wantSum)
		}
		checked++
	}
	// Every instance is a restore; of the backups, the newest of each
	// strategy is restored once more.
	for _, strategy := range []string{"snapshot", "logical"} {
		id := completedBackup(p, strategy)
		b := byID(t, backups, id)
		name := "check-" + b["name"].(string) + "-" + b["id"].(string)[:8]
		var rr struct {
			Instance map[string]any `json:"instance"`
		}
		if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
			"name": name, "datastore": map[string]any{"type": "postgresql", "version": "15"},
			"volume": map[string]any{"size": 1}, "restorePoint": map[string]any{"backupRef": b["id"]}}}, &rr); code != 202 {
			t.Fatalf("restore of %s: %d %v", b["name"], code, rr)
		}
		all, _ := p.dbSettled()
		in := byID(t, all, rr.Instance["id"].(string))
		if in["status"] != "ACTIVE" {
			t.Fatalf("backup %s restored into %v", b["name"], in)
		}
		if rows, sum := tableSum(t, pgConn(t, in)); rows != wantRows || sum != wantSum {
			t.Fatalf("backup %s restores %d rows (sum %s), want %d (%s)", b["name"], rows, sum, wantRows, wantSum)
		}
		checked++
	}
	if checked < 8 {
		t.Fatalf("only %d instances and backups survived the kills to check", checked)
	}
	t.Logf("%d instances and completed backups hold the source's rows", checked)

	// Everything deleted leaves nothing behind.
	insts, backups = p.dbSettled()
	for _, in := range insts {
		p.callDB("DELETE", "/instances/"+in["id"].(string), nil, nil)
	}
	for _, b := range backups {
		p.callDB("DELETE", "/backups/"+b["id"].(string), nil, nil)
	}
	for {
		insts, backups := p.dbList("instances"), p.dbList("backups")
		if len(insts) == 0 && len(backups) == 0 {
			break
		}
		for _, x := range append(insts, backups...) {
			if x["status"] == "ERROR" || x["status"] == "DELETE_FAILED" {
				t.Fatalf("deleting %s: %s: %v\n%s", x["name"], x["status"], x["fail_reason"], p.log.String())
			}
		}
		if t.Context().Err() != nil {
			t.Fatal("instances and backups were not all deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	repoCheck(t, data)
	if mounts := string(mustRead(t, "/proc/self/mounts")); strings.Contains(mounts, filepath.Join(data, "attachments")) {
		t.Fatalf("an attachment of the data directory is still mounted:\n%s", mounts)
	}
	// The data plane stopped with the service (nothing was attached).
	noEngineLeftovers(t, data)
}

// noEngineLeftovers opens the volume engine of data, whose data plane
// has stopped, and fails t for every volume or snapshot left in it.
func noEngineLeftovers(t *testing.T, data string) {
	t.Helper()
	eng, err := volume.Open(data, volume.Options{})
	if err != nil {
		t.Fatalf("the engine after everything was deleted: %v", err)
	}
	defer eng.Close()
	for _, v := range eng.Volumes() {
		t.Errorf("engine volume %s (%s) left", v.ID.Short(), v.Name)
	}
	for _, s := range eng.Snapshots(cairn.ID{}) {
		t.Errorf("engine snapshot %s (%s) left", s.ID.Short(), s.Name)
	}
}

// sourceInstance creates a PostgreSQL instance "src" with 64 MiB of rows
// that do not compress in table t (a backup spans many chunks), and
// returns its ID and a connection to it.
func sourceInstance(t *testing.T, p *svcProc) (string, *pgx.Conn) {
	t.Helper()
	source := p.createInstance("src", "postgresql", "15")
	conn := pgConn(t, source)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (id int PRIMARY KEY, v text); "+
		"INSERT INTO t SELECT g, (SELECT string_agg(md5(g::text || ':' || k::text), '') FROM generate_series(1, 8) k) FROM generate_series(1, 200000) g"); err != nil {
		t.Fatal(err)
	}
	return source["id"].(string), conn
}

// backupRequest returns a request for a backup of instance src by
// strategy, which returns the backup's ID, or its error (a kill beside
// it may cut it).
func backupRequest(src, strategy string) func(p *svcProc) (string, error) {
	return func(p *svcProc) (string, error) {
		var b struct {
			Backup map[string]any `json:"backup"`
		}
		code, err := p.tryDB("POST", "/backups", map[string]any{"backup": map[string]any{
			"name": strategy, "instance": src, "strategy": strategy}}, &b)
		if err != nil || code != 202 {
			return "", fmt.Errorf("backup create: %d %v %v", code, b, err)
		}
		return b.Backup["id"].(string), nil
	}
}

// restoreRequests returns a maker of restore requests: each makes a new
// PostgreSQL instance, restored-N, from the newest completed backup of a
// strategy, which prepare chooses before the request.
func restoreRequests() func(strategy string) (do func(p *svcProc) (string, error), prepare func(p *svcProc)) {
	n := 0
	return func(strategy string) (func(p *svcProc) (string, error), func(p *svcProc)) {
		n++
		name := fmt.Sprintf("restored-%d", n)
		var ref string
		return func(p *svcProc) (string, error) {
				var r struct {
					Instance map[string]any `json:"instance"`
				}
				code, err := p.tryDB("POST", "/instances", map[string]any{"instance": map[string]any{
					"name": name, "datastore": map[string]any{"type": "postgresql", "version": "15"},
					"volume": map[string]any{"size": 1}, "restorePoint": map[string]any{"backupRef": ref}}}, &r)
				if err != nil || code != 202 {
					return "", fmt.Errorf("restore: %d %v %v", code, r, err)
				}
				return r.Instance["id"].(string), nil
			}, func(p *svcProc) {
				ref = completedBackup(p, strategy)
			}
	}
}

// createInstance asks for an instance of datastore (type and version)
// with database app and user bob, waits until it settles, and returns it
// ACTIVE.
func (p *svcProc) createInstance(name, typ, version string) map[string]any {
	p.t.Helper()
	var created struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": name, "datastore": map[string]any{"type": typ, "version": version}, "volume": map[string]any{"size": 1},
		"databases": []any{map[string]any{"name": "app"}},
		"users":     []any{map[string]any{"name": "bob", "password": "pw-12345", "databases": []any{map[string]any{"name": "app"}}}},
	}}, &created); code != 202 {
		p.t.Fatalf("instance create: %d %v", code, created)
	}
	insts, _ := p.dbSettled()
	in := byID(p.t, insts, created.Instance["id"].(string))
	if in["status"] != "ACTIVE" {
		p.t.Fatalf("instance %s: %v", name, in)
	}
	return in
}

// deleteAll deletes every instance and database backup, and waits until
// none is listed.
func (p *svcProc) deleteAll() {
	p.t.Helper()
	insts, backups := p.dbSettled()
	for _, x := range insts {
		p.callDB("DELETE", "/instances/"+x["id"].(string), nil, nil)
	}
	for _, x := range backups {
		p.callDB("DELETE", "/backups/"+x["id"].(string), nil, nil)
	}
	for _, x := range insts {
		p.dbGone("instances", x["id"].(string))
	}
	for _, x := range backups {
		p.dbGone("backups", x["id"].(string))
	}
}

// repoCheck runs `cairn repo check --read-data` on the service's
// default container in data, whose service has stopped.
func repoCheck(t *testing.T, data string) {
	t.Helper()
	check := exec.CommandContext(t.Context(), binaryFor(t), "repo", "check", "--read-data",
		"--repo", filepath.Join(data, "backups", "volumebackups"), "--key-file", filepath.Join(data, "backup.key"))
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("repo check: %v\n%s", err, out)
	}
}

// byID returns the one of list with id.
func byID(t *testing.T, list []map[string]any, id string) map[string]any {
	t.Helper()
	for _, x := range list {
		if x["id"] == id {
			return x
		}
	}
	t.Fatalf("%s is not in %v", id, list)
	return nil
}

// completedBackup returns the newest completed database backup of a
// strategy.
func completedBackup(p *svcProc, strategy string) string {
	p.t.Helper()
	id, newest := "", ""
	for _, b := range p.dbList("backups") {
		if b["status"] == "COMPLETED" && b["strategy"] == strategy && b["created"].(string) >= newest {
			id, newest = b["id"].(string), b["created"].(string)
		}
	}
	if id == "" {
		p.t.Fatalf("no completed %s backup", strategy)
	}
	return id
}
