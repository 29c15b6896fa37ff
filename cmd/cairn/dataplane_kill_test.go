package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// stopTheDataPlane stops the data plane of data, if one runs, even with
// instances attached: the next service starts one of its own, which
// inherits that service's test hooks.
func stopTheDataPlane(t *testing.T, data string) {
	t.Helper()
	if dp := findDataPlane(t.Context(), data); dp != nil {
		if err := stopDataPlane(t.Context(), data, dp.info.PID); err != nil {
			t.Fatal(err)
		}
	}
}

// logHostOnFailure logs, when t fails, the tail of the data plane's log
// and of each instance's server log in data.
func logHostOnFailure(t *testing.T, data string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(data, instancesDir, "logs", "*.log"))
		for _, path := range append([]string{filepath.Join(data, dataPlaneLog)}, logs...) {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			if len(b) > 8192 {
				b = b[len(b)-8192:]
			}
			t.Logf("%s:\n%s", path, b)
		}
	})
}

// waitHealthy waits until instance id is ACTIVE and HEALTHY, and
// returns it.
func (p *svcProc) waitHealthy(id string) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for {
		var got struct {
			Instance map[string]any `json:"instance"`
		}
		code, err := p.tryDB("GET", "/instances/"+id, nil, &got)
		if err == nil && code == 200 && got.Instance["status"] == "ACTIVE" && got.Instance["operating_status"] == "HEALTHY" {
			return got.Instance
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("instance %s not healthy after %v: %d %v %v\n%s", id, pointTimeout, code, got.Instance, err, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDataPlaneKill9 kills the data plane process (the volume engine,
// its NBD exports and the database servers' supervisor) with SIGKILL at
// the steps of database backups and restores: at points of its own (the
// source quiesced, its snapshot taken, a restored data directory
// prepared, a dump loaded) and while the service, held at a point of
// its own, reads a snapshot, streams a dump or writes a restored volume
// through it. The service starts another data plane, which brings the
// source back with every committed row; each cut backup or restore has
// completed or failed with a reason, none stays transient; every
// completed backup restores the source's rows; and once everything is
// deleted nothing is left mounted or stored, and `repo check
// --read-data` is clean.
func TestDataPlaneKill9(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	src, conn := sourceInstance(t, p)
	wantRows, wantSum := tableSum(t, conn)
	conn.Close(t.Context())
	backup := func(strategy string) func(p *svcProc) (string, error) { return backupRequest(src, strategy) }
	// One completed backup of each strategy to restore from.
	backupEach := func() {
		t.Helper()
		for _, strategy := range []string{"snapshot", "logical", "physical"} {
			id, err := backup(strategy)(p)
			if err != nil {
				t.Fatal(err)
			}
			_, backups := p.dbSettled()
			if b := byID(t, backups, id); b["status"] != "COMPLETED" {
				t.Fatalf("%s backup: %v", strategy, b)
			}
		}
	}
	backupEach()
	p.stop()

	restore := restoreRequests()
	type round struct {
		name string
		at   string // the point: of the data plane ("dbhost ..."), or of the service, held there
		do   func(p *svcProc) (string, error)
		// prepare, when set, runs on the hooked service before do.
		prepare func(p *svcProc)
	}
	rounds := []round{
		{name: "snapshot backup", at: "dbhost quiesced#1", do: backup("snapshot")},
		{name: "snapshot backup", at: "dbhost snapshotted#1", do: backup("snapshot")},
		{name: "snapshot backup", at: "store.put " + format.ChunksPrefix + "#3", do: backup("snapshot")},
		{name: "logical backup", at: "store.put " + format.ChunksPrefix + "#1", do: backup("logical")},
		{name: "physical backup", at: "store.put " + format.ChunksPrefix + "#2", do: backup("physical")},
	}
	for _, at := range []string{"dbhost prepared#1", "dbhost ready#1"} {
		do, prepare := restore("snapshot")
		rounds = append(rounds, round{"restore from the local snapshot", at, do, prepare})
	}
	for _, at := range []string{"store.get " + format.ChunksPrefix + "#1", "dbhost loaded#1"} {
		do, prepare := restore("logical")
		rounds = append(rounds, round{"restore from a dump", at, do, prepare})
	}
	for _, at := range []string{"store.get " + format.ChunksPrefix + "#2", "dbhost configured#1"} {
		do, prepare := restore("physical")
		rounds = append(rounds, round{"restore from a base backup", at, do, prepare})
	}

	restored := 0 // restores that came up through a kill
	for i, r := range rounds {
		// A fresh data plane, started by the hooked service, carries the
		// point; the one started after the kill passes it by.
		stopTheDataPlane(t, data)
		point := newHookPoint(t, r.at).once()
		ofService := !strings.HasPrefix(r.at, "dbhost ")
		if ofService {
			point.withRelease()
		}
		p := startServiceEnv(t, data, point.env())
		p.waitHealthy(src)
		if r.prepare != nil {
			r.prepare(p)
		}
		dp := findDataPlane(t.Context(), data)
		if dp == nil {
			t.Fatalf("round %d: no data plane", i)
		}
		type result struct {
			id  string
			err error
		}
		res := make(chan result, 1)
		go func() {
			id, err := r.do(p)
			res <- result{id, err}
		}()
		point.reached(p.done, p.log.String)
		if err := syscall.Kill(dp.info.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if ofService {
			point.resume() // it meets a dead data plane, or the next one
		}
		got := <-res
		if got.err != nil {
			t.Fatalf("round %d: %s: %v", i, r.name, got.err)
		}
		if !p.waitLog("the data plane exited; starting another") {
			t.Fatalf("round %d: the service did not see the data plane die: %s", i, p.log.String())
		}
		// The new data plane brings the source back, with its rows.
		source := p.waitHealthy(src)
		insts, backups := p.dbSettled()
		for _, in := range insts {
			if in["status"] != "ACTIVE" && (in["status"] != "ERROR" || in["fail_reason"] == nil || in["id"] == src) {
				t.Fatalf("round %d: killed at %s, instance %s is %s: %v\n%s", i, r.at, in["name"], in["status"], in["fail_reason"], p.log.String())
			}
		}
		for _, b := range backups {
			if b["status"] != "COMPLETED" && (b["status"] != "FAILED" || b["fail_reason"] == nil) {
				t.Fatalf("round %d: killed at %s, backup %s is %s: %v\n%s", i, r.at, b["name"], b["status"], b["fail_reason"], p.log.String())
			}
		}
		status := ""
		for _, x := range append(insts, backups...) {
			if x["id"] == got.id {
				status = fmt.Sprintf("%s (%v)", x["status"], x["fail_reason"])
			}
		}
		sc := pgConn(t, source)
		if rows, sum := tableSum(t, sc); rows != wantRows || sum != wantSum {
			t.Fatalf("round %d: the source has %d rows (sum %s) after the data plane was killed, want %d (%s)", i, rows, sum, wantRows, wantSum)
		}
		sc.Close(t.Context())
		t.Logf("round %d: %s killed at %s: %s", i, r.name, r.at, status)
		// A restore that came up holds the source's rows. It goes then,
		// as does one that failed: the host keeps one restore at a time.
		for _, in := range insts {
			if in["id"] == src {
				continue
			}
			if in["status"] == "ACTIVE" {
				c := pgConn(t, p.waitHealthy(in["id"].(string)))
				if rows, sum := tableSum(t, c); rows != wantRows || sum != wantSum {
					t.Fatalf("round %d: instance %s has %d rows (sum %s), want %d (%s)", i, in["name"], rows, sum, wantRows, wantSum)
				}
				// And commits writes, which flush its WAL to disk: a
				// file system turned read-only under it (a second owner
				// of its mount, fixed) answered reads from the cache.
				if _, err := c.Exec(t.Context(), "CREATE TABLE written AS SELECT generate_series(1, 10000) AS n"); err != nil {
					t.Fatalf("round %d: writing to instance %s: %v", i, in["name"], err)
				}
				c.Close(t.Context())
				restored++
			}
			p.callDB("DELETE", "/instances/"+in["id"].(string), nil, nil)
			p.dbGone("instances", in["id"].(string))
		}
		p.stop()
	}

	// A backup of every strategy completes now, and every completed
	// backup and every restored instance holds the source's rows.
	stopTheDataPlane(t, data)
	p = startService(t, data)
	p.waitHealthy(src)
	backupEach()
	_, backups := p.dbSettled()
	checked := restored
	// The newest backup of each strategy restores once more.
	for _, strategy := range []string{"snapshot", "logical", "physical"} {
		b := byID(t, backups, completedBackup(p, strategy))
		var rr struct {
			Instance map[string]any `json:"instance"`
		}
		if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
			"name": "check-" + strategy, "datastore": map[string]any{"type": "postgresql", "version": "15"},
			"volume": map[string]any{"size": 1}, "restorePoint": map[string]any{"backupRef": b["id"]}}}, &rr); code != 202 {
			t.Fatalf("restore of %s: %d %v", b["name"], code, rr)
		}
		all, _ := p.dbSettled()
		in := byID(t, all, rr.Instance["id"].(string))
		if in["status"] != "ACTIVE" {
			t.Fatalf("backup %s (%s) restored into %v", b["name"], strategy, in)
		}
		c := pgConn(t, in)
		if rows, sum := tableSum(t, c); rows != wantRows || sum != wantSum {
			t.Fatalf("backup %s (%s) restores %d rows (sum %s), want %d (%s)", b["name"], strategy, rows, sum, wantRows, wantSum)
		}
		c.Close(t.Context())
		p.callDB("DELETE", "/instances/"+in["id"].(string), nil, nil)
		p.dbGone("instances", in["id"].(string))
		checked++
	}
	t.Logf("%d instances and completed backups hold the source's rows", checked)

	// Everything deleted leaves nothing behind.
	p.deleteAll()
	p.stop()
	repoCheck(t, data)
	if mounts := string(mustRead(t, "/proc/self/mounts")); strings.Contains(mounts, filepath.Join(data, "attachments")) {
		t.Fatalf("an attachment of the data directory is still mounted:\n%s", mounts)
	}
	noEngineLeftovers(t, data)
}
