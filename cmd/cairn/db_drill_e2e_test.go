package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// TestDatabaseDrill runs verify and drill policies made with the CLI on
// an every-minute schedule against real PostgreSQL and MariaDB
// instances (the verify policy chooses them by a tag set with Trove's
// metadata call): a slot reads back each backup's chunks, and restores the
// newest from the repository into a scratch instance that pg_amcheck or
// mariadb-check and the policy's query check. The backups show both
// outcomes (through the database API), the query's answer is the
// source's, and the scratch instances are gone afterwards. The waits
// are for the marks the slots bring, read back.
func TestDatabaseDrill(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	home := t.TempDir()
	p := startService(t, data)
	cli := func(args ...string) result {
		return runCLI(t, []string{"HOME=" + home}, append(args, "--url", p.url, "--token", p.token)...)
	}

	pg := p.createInstance("pg-drill", "postgresql", "15")
	conn := pgConn(t, pg)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g"); err != nil {
		t.Fatal(err)
	}
	md := p.createInstance("mdb-drill", "mariadb", "10.11")
	backupOf := map[string]string{}
	for _, in := range []map[string]any{pg, md} {
		var b struct {
			Backup map[string]any `json:"backup"`
		}
		if code := p.callDB("POST", "/backups", map[string]any{"backup": map[string]any{"name": in["name"], "instance": in["id"]}}, &b); code != 202 {
			t.Fatalf("backup of %s: %d %v", in["name"], code, b)
		}
		backupOf[in["id"].(string)] = b.Backup["id"].(string)
	}
	p.dbSettled()

	pgID, mdID := pg["id"].(string), md["id"].(string)
	var pol cairn.Policy
	cliJSON(t, cli, &pol, "policy", "create", "pg-drill", "--action", "drill", "--schedule", "* * * * *", "--instance", pgID,
		"--drill-query", "SELECT count(*) FROM t", "--drill-database", "app")
	if pol.DrillQuery != "SELECT count(*) FROM t" || pol.DrillDatabase != "app" || pol.Target.Kind != cairn.TargetInstance {
		t.Fatalf("created %+v", pol)
	}
	cliOK(t, cli, "policy", "create", "mdb-drill", "--action", "drill", "--schedule", "* * * * *", "--instance", mdID,
		"--drill-query", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'", "--drill-database", "app")
	// The verify policy chooses both instances by a tag of their
	// metadata, set with Trove's metadata call.
	for _, id := range []string{pgID, mdID} {
		var item map[string]map[string]string
		if code := p.callDB("POST", "/instances/"+id+"/metadata/tier", map[string]any{"metadata": map[string]any{"value": "gold"}}, &item); code != 200 || item["metadata"]["tier"] != "gold" {
			t.Fatalf("tag instance %s: %d %v", id, code, item)
		}
	}
	cliOK(t, cli, "policy", "create", "verify", "--action", "verify", "--schedule", "* * * * *", "--instance-tag", "tier=gold")

	// Each backup's marks, once both checks have run.
	marks := map[string]map[string]any{}
	for inst, id := range backupOf {
		for {
			var b struct {
				Backup map[string]any `json:"backup"`
			}
			if code := p.callDB("GET", "/backups/"+id, nil, &b); code != 200 {
				t.Fatalf("backup show %s: %d", id, code)
			}
			if b.Backup["drill"] != nil && b.Backup["verification"] != nil {
				marks[inst] = b.Backup
				break
			}
			select {
			case <-p.done:
				t.Fatalf("the service exited: %s", p.log.String())
			case <-time.After(200 * time.Millisecond): // polls the state the test waits for
			}
		}
	}
	for _, name := range []string{"pg-drill", "mdb-drill", "verify"} {
		cliOK(t, cli, "policy", "update", name, "--disabled")
	}
	insts, _ := p.dbSettled()
	if len(insts) != 2 {
		t.Fatalf("instances after the drills: %v", insts)
	}
	for inst, want := range map[string][]string{
		pgID: {"pg_amcheck --all --heapallindexed found no corruption", `returned "5000"`},
		mdID: {"mariadb-check --all-databases found every table OK", `returned "1"`},
	} {
		m := marks[inst]
		drill, _ := m["drill"].(map[string]any)
		ver, _ := m["verification"].(map[string]any)
		detail, _ := drill["detail"].(string)
		seconds, _ := drill["seconds"].(float64)
		bytes, _ := drill["bytes"].(float64)
		if drill["state"] != cairn.CheckPassed || seconds <= 0 || bytes <= 0 || !strings.Contains(detail, want[0]) || !strings.Contains(detail, want[1]) {
			t.Errorf("drill of %s's backup: %v", inst, drill)
		}
		if ver["state"] != cairn.CheckPassed || ver["chunks"] == nil || m["verify_state"] != cairn.CheckPassed || m["verified_at"] != ver["at"] {
			t.Errorf("verification of %s's backup: %v (verified_at %v, verify_state %v)", inst, ver, m["verified_at"], m["verify_state"])
		}
		t.Logf("drill of a %s backup: %.1f s: %s", m["datastore"].(map[string]any)["type"], drill["seconds"], detail)
	}
	p.deleteAll()
	repoCheck(t, data)
}

// TestDatabaseDrillKill9 kills the service with SIGKILL in the middle of
// a drill of a PostgreSQL backup (its first read of a chunk: the scratch
// instance's row and volume made, the restore under way). The next
// service finishes the drill: it removes what the first attempt left,
// restores again and checks, and the drill passes; afterwards the only
// instance is the source, and the engine and the repository hold
// nothing the catalog does not name.
func TestDatabaseDrillKill9(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	home := t.TempDir()
	p := startService(t, data)
	pg := p.createInstance("pg-drill-kill", "postgresql", "15")
	if _, err := pgConn(t, pg).Exec(t.Context(), "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g"); err != nil {
		t.Fatal(err)
	}
	var b struct {
		Backup map[string]any `json:"backup"`
	}
	if code := p.callDB("POST", "/backups", map[string]any{"backup": map[string]any{"name": "b", "instance": pg["id"]}}, &b); code != 202 {
		t.Fatalf("backup: %d %v", code, b)
	}
	p.dbSettled()
	p.stop()

	reading := newHookPoint(t, "store.get "+format.ChunksPrefix+"#1")
	p = startServiceEnv(t, data, reading.env())
	cli := func(args ...string) result {
		return runCLI(t, []string{"HOME=" + home}, append(args, "--url", p.url, "--token", p.token)...)
	}
	cliOK(t, cli, "policy", "create", "drill", "--action", "drill", "--schedule", "* * * * *", "--instance", pg["id"].(string),
		"--drill-query", "SELECT count(*) FROM t", "--drill-database", "app")
	reading.reached(p.done, p.log.String)
	p.kill()

	p = startService(t, data)
	id := b.Backup["id"].(string)
	var drill map[string]any
	for drill == nil {
		var got struct {
			Backup map[string]any `json:"backup"`
		}
		if code := p.callDB("GET", "/backups/"+id, nil, &got); code != 200 {
			t.Fatalf("backup show: %d", code)
		}
		drill, _ = got.Backup["drill"].(map[string]any)
		if drill != nil {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("the service exited: %s", p.log.String())
		case <-time.After(200 * time.Millisecond): // polls the state the test waits for
		}
	}
	cliOK(t, cli, "policy", "update", "drill", "--disabled")
	insts, _ := p.dbSettled()
	if detail, _ := drill["detail"].(string); drill["state"] != cairn.CheckPassed || !strings.Contains(detail, `returned "1000"`) {
		t.Fatalf("the drill after the kill: %v", drill)
	}
	if len(insts) != 1 || insts[0]["id"] != pg["id"] {
		t.Fatalf("instances after the drill: %v", insts)
	}
	// The drill that passed is the one the kill cut short, run again.
	var tasks struct {
		Tasks []map[string]any `json:"tasks"`
	}
	if code := p.call("GET", "/tasks", nil, &tasks); code != 200 {
		t.Fatalf("GET /tasks: %d", code)
	}
	// (A later slot may have drilled again before the policy was off.)
	resumed := 0
	for _, task := range tasks.Tasks {
		if task["kind"] != "dbbackup.drill" {
			continue
		}
		if task["state"] != "done" {
			t.Fatalf("a drill's task: %v", task)
		}
		if task["attempts"] == 2.0 {
			resumed++
		}
	}
	if resumed != 1 {
		t.Fatalf("%d drill tasks run twice, want the one the kill cut short: %v", resumed, tasks.Tasks)
	}
	p.deleteAll()
	repoCheck(t, data)
}
