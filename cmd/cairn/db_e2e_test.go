package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/testenv"
)

// needInstances skips t (fails it under CI=true) unless database
// instances can run here: root, nbdfuse, PostgreSQL 15 and the trove
// client.
func needInstances(t *testing.T) {
	t.Helper()
	dbagenttest.NeedLoop(t)
	for _, tool := range []string{"nbdfuse", "fusermount3", "openstack", "/usr/lib/postgresql/15/bin/postgres"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is missing (test.sh installs libnbd-bin, fuse3, python3-troveclient, postgresql-15)")
		}
	}
}

// troveClient runs the real `openstack database` client against a
// service, as its admin project, with keystoneauth's admin_token plugin.
type troveClient struct {
	t        *testing.T
	endpoint string
	token    string
	home     string
}

func (c troveClient) run(args ...string) (string, error) {
	c.t.Helper()
	all := append([]string{"--os-auth-type", "admin_token", "--os-endpoint", c.endpoint, "--os-token", c.token}, args...)
	cmd := exec.CommandContext(c.t.Context(), "openstack", all...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "LC_ALL=C.UTF-8"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("openstack %s: %v: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// json runs a command that must succeed, with -f json, into out.
func (c troveClient) json(out any, args ...string) {
	c.t.Helper()
	stdout, err := c.run(append(args, "-f", "json")...)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		c.t.Fatalf("openstack %s: output %q: %v", strings.Join(args, " "), stdout, err)
	}
}

// waitStatus shows a resource until its status leaves the transient
// ones, and returns it; a status read back is the event waited for.
func (c troveClient) waitStatus(kind, name string, transient ...string) map[string]any {
	c.t.Helper()
	for {
		var obj map[string]any
		c.json(&obj, "database", kind, "show", name)
		st, _ := obj["status"].(string)
		still := false
		for _, s := range transient {
			still = still || st == s
		}
		if !still {
			return obj
		}
		if c.t.Context().Err() != nil {
			c.t.Fatalf("%s %s still %s", kind, name, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// gone waits until showing name fails: the resource was deleted.
func (c troveClient) gone(kind, name string) {
	c.t.Helper()
	for {
		if _, err := c.run("database", kind, "show", name); err != nil {
			return
		}
		if c.t.Context().Err() != nil {
			c.t.Fatalf("%s %s was not deleted", kind, name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pgConn connects to an instance over TCP as the test's user.
func pgConn(t *testing.T, inst map[string]any) *pgx.Conn {
	t.Helper()
	addrs, _ := inst["addresses"].([]any)
	if len(addrs) != 1 {
		t.Fatalf("instance addresses: %v", inst["addresses"])
	}
	a := addrs[0].(map[string]any)
	conn, err := pgx.Connect(t.Context(), fmt.Sprintf("host=%v port=%v user=bob password=pw-12345 dbname=app sslmode=disable", a["address"], a["port"]))
	if err != nil {
		t.Fatalf("connecting to the instance: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgSuperConn connects to an instance as the superuser, over the
// server's unix socket on the host (the data plane's own way in), for
// what only a superuser may do (pg_switch_wal).
func pgSuperConn(t *testing.T, inst map[string]any) *pgx.Conn {
	t.Helper()
	addrs, _ := inst["addresses"].([]any)
	if len(addrs) != 1 {
		t.Fatalf("instance addresses: %v", inst["addresses"])
	}
	port := addrs[0].(map[string]any)["port"]
	conn, err := pgx.Connect(t.Context(), fmt.Sprintf("host=/run/cairn-db/%v port=%v user=postgres dbname=postgres", port, port))
	if err != nil {
		t.Fatalf("connecting to the instance as the superuser: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgbench is a pgbench run against an instance.
type pgbench struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string  // its progress reports
	out   bytes.Buffer // its output, but the progress reports
	msgs  bytes.Buffer // its other messages (stderr)
	err   chan error   // Wait's answer, after out and msgs are written
}

// startPgbench initialises pgbench's tables in the instance's database
// app, then starts pgbench on it: 2 clients for 8 s, reporting progress
// every second.
func startPgbench(t *testing.T, inst map[string]any) *pgbench {
	t.Helper()
	a := inst["addresses"].([]any)[0].(map[string]any)
	bin := "/usr/lib/postgresql/15/bin/pgbench"
	conn := []string{"-h", fmt.Sprint(a["address"]), "-p", fmt.Sprint(a["port"]), "-U", "bob"}
	env := []string{"PGPASSWORD=pw-12345", "PATH=" + os.Getenv("PATH")}
	ini := exec.CommandContext(t.Context(), bin, append(append([]string{"-i", "-q", "-s", "1"}, conn...), "app")...)
	ini.Env = env
	if out, err := ini.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	b := &pgbench{t: t, lines: make(chan string, 100), err: make(chan error, 1)}
	b.cmd = exec.CommandContext(t.Context(), bin, append(append([]string{"-c", "2", "-T", "8", "-P", "1"}, conn...), "app")...)
	b.cmd.Env = env
	b.cmd.Stdout = &b.out
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "progress:") {
				b.lines <- line
			} else {
				b.msgs.WriteString(line + "\n")
			}
		}
		b.err <- b.cmd.Wait()
	}()
	return b
}

// progress waits for pgbench's next progress report and returns its
// TPS.
func (b *pgbench) progress() float64 {
	b.t.Helper()
	line, ok := <-b.lines
	if !ok {
		err := <-b.err
		b.t.Fatalf("pgbench ended before its next progress report: %v\n%s%s", err, b.out.String(), b.msgs.String())
	}
	var at, tps float64
	if _, err := fmt.Sscanf(line, "progress: %f s, %f tps", &at, &tps); err != nil {
		b.t.Fatalf("pgbench progress %q: %v", line, err)
	}
	return tps
}

// finish waits for pgbench to end, and fails the test unless every
// transaction succeeded.
func (b *pgbench) finish() {
	b.t.Helper()
	for range b.lines {
	}
	if err := <-b.err; err != nil || !strings.Contains(b.out.String(), "number of failed transactions: 0 ") {
		b.t.Fatalf("pgbench: %v\n%s%s", err, b.out.String(), b.msgs.String())
	}
}

// tableSum returns the row count and a checksum of table t's content.
func tableSum(t *testing.T, conn *pgx.Conn) (int64, string) {
	t.Helper()
	var n int64
	var sum string
	err := conn.QueryRow(t.Context(), "SELECT count(*), coalesce(md5(string_agg(id::text || ':' || v, ',' ORDER BY id)), '') FROM t").Scan(&n, &sum)
	if err != nil {
		t.Fatal(err)
	}
	return n, sum
}

// TestDatabaseInstances drives PostgreSQL instances through the real
// trove client against cairn serve with its data plane process: create
// with a database and a user, kill -9 of the service while the database
// serves, a snapshot backup, restores into new instances from the
// backup's local snapshot and, once that is gone, from the repository,
// each checked row by row, and deletes that leave no mount, device,
// snapshot or unreferenced object behind.
func TestDatabaseInstances(t *testing.T) {
	t.Parallel()
	needInstances(t)
	data := dbagenttest.ReachableTempDir(t)
	p := startService(t, data)
	c := troveClient{t: t, endpoint: p.url + "/v1.0/admin", token: p.token, home: t.TempDir()}

	var ds []map[string]any
	c.json(&ds, "datastore", "list")
	if !strings.Contains(fmt.Sprint(ds), "postgresql") {
		t.Fatalf("datastore list: %v", ds)
	}
	var inst map[string]any
	c.json(&inst, "database", "instance", "create", "pg1", "--flavor", "host", "--size", "1",
		"--datastore", "postgresql", "--datastore-version", "15", "--databases", "app", "--users", "bob:pw-12345")
	if inst["status"] != "BUILD" {
		t.Fatalf("instance create: %v", inst)
	}
	inst = c.waitStatus("instance", "pg1", "BUILD")
	if inst["status"] != "ACTIVE" || inst["operating_status"] != "HEALTHY" {
		t.Fatalf("instance: %v", inst)
	}
	conn := pgConn(t, inst)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g"); err != nil {
		t.Fatal(err)
	}

	// The service dies while pgbench runs; the database does not notice:
	// pgbench goes on committing, and ends without a failed transaction.
	bench := startPgbench(t, inst)
	bench.progress()
	p.kill()
	if _, err := conn.Exec(t.Context(), "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(5001, 6000) g"); err != nil {
		t.Fatalf("writing while the service is dead: %v", err)
	}
	if tps := bench.progress(); tps <= 0 {
		t.Fatalf("pgbench committed nothing while the service was dead")
	}
	p = startService(t, data)
	c.endpoint = p.url + "/v1.0/admin"
	if inst = c.waitStatus("instance", "pg1", "BUILD"); inst["status"] != "ACTIVE" || inst["operating_status"] != "HEALTHY" {
		t.Fatalf("instance after the service's restart: %v", inst)
	}
	bench.finish()
	wantRows, wantSum := tableSum(t, conn)
	if wantRows != 6000 {
		t.Fatalf("%d rows, want 6000", wantRows)
	}

	var b map[string]any
	c.json(&b, "database", "backup", "create", "-i", "pg1", "b1")
	if b["status"] != "NEW" || b["strategy"] != "snapshot" {
		t.Fatalf("backup create: %v", b)
	}
	if b = c.waitStatus("backup", "b1", "NEW", "BUILDING", "SAVING"); b["status"] != "COMPLETED" {
		t.Fatalf("backup: %v", b)
	}
	// The client's list shows it, whole and by instance.
	for _, args := range [][]string{{"database", "backup", "list"}, {"database", "backup", "list", "--instance", "pg1"}} {
		var list []map[string]any
		c.json(&list, args...)
		if len(list) != 1 || list[0]["ID"] != b["id"] || list[0]["Status"] != "COMPLETED" {
			t.Fatalf("openstack %s: %v", strings.Join(args, " "), list)
		}
	}
	// Rows written after the backup are not in its restores.
	if _, err := conn.Exec(t.Context(), "INSERT INTO t SELECT g, 'after' FROM generate_series(6001, 6100) g"); err != nil {
		t.Fatal(err)
	}
	restore := func(name string) {
		t.Helper()
		var r map[string]any
		c.json(&r, "database", "instance", "create", name, "--flavor", "host", "--size", "1",
			"--datastore", "postgresql", "--datastore-version", "15", "--backup", "b1")
		if r = c.waitStatus("instance", name, "BUILD"); r["status"] != "ACTIVE" {
			t.Fatalf("restored instance %s: %v", name, r)
		}
		rows, sum := tableSum(t, pgConn(t, r))
		if rows != wantRows || sum != wantSum {
			t.Fatalf("instance %s restored %d rows (sum %s), want %d (sum %s)", name, rows, sum, wantRows, wantSum)
		}
	}
	// A logical backup (the strategy is given in the request; the trove
	// client has no flag for it) restores the same rows.
	var lg struct {
		Backup map[string]any `json:"backup"`
	}
	status := p.callDB("POST", "/backups", map[string]any{"backup": map[string]any{
		"name": "lg", "instance": inst["id"], "strategy": "logical"}}, &lg)
	if status != 202 || lg.Backup["strategy"] != "logical" {
		t.Fatalf("logical backup: %d %v", status, lg.Backup)
	}
	if b := c.waitStatus("backup", "lg", "NEW", "BUILDING", "SAVING"); b["status"] != "COMPLETED" {
		t.Fatalf("logical backup: %v", b)
	}
	began := time.Now()
	restore("pg2") // from the snapshot, still on the host
	t.Logf("restore from the local snapshot: ACTIVE after %v", time.Since(began).Round(time.Millisecond))

	// The logical backup was taken after the rows written past the
	// snapshot backup: they are in its restore.
	var r map[string]any
	c.json(&r, "database", "instance", "create", "pg4", "--flavor", "host", "--size", "1",
		"--datastore", "postgresql", "--datastore-version", "15", "--backup", "lg")
	if r = c.waitStatus("instance", "pg4", "BUILD"); r["status"] != "ACTIVE" {
		t.Fatalf("instance restored from a dump: %v", r)
	}
	pg1Rows, pg1Sum := tableSum(t, conn)
	if rows, sum := tableSum(t, pgConn(t, r)); rows != pg1Rows || sum != pg1Sum || rows != wantRows+100 {
		t.Fatalf("instance restored from a dump: %d rows (sum %s), want %d (sum %s)", rows, sum, pg1Rows, pg1Sum)
	}

	c.run("database", "instance", "delete", "pg1")
	c.gone("instance", "pg1")
	began = time.Now()
	restore("pg3") // the snapshot went with pg1: from the repository
	t.Logf("restore from the repository: ACTIVE after %v", time.Since(began).Round(time.Millisecond))

	for _, name := range []string{"b1", "lg"} {
		if _, err := c.run("database", "backup", "delete", name); err != nil {
			t.Fatal(err)
		}
		c.gone("backup", name)
	}
	for _, name := range []string{"pg2", "pg3", "pg4"} {
		if _, err := c.run("database", "instance", "delete", name); err != nil {
			t.Fatal(err)
		}
		c.gone("instance", name)
	}
	// The data plane's detach waited for each volume's NBD session to
	// end, so no delete met its volume still in use.
	if strings.Contains(p.log.String(), "still in use after its detach") {
		t.Errorf("a deleted instance's volume was still in use after its detach:\n%s", p.log.String())
	}
	repoCheck(t, data)
	// Every instance is gone from the host: nothing mounted, attached
	// or exported for them.
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), filepath.Join(data, "attachments")) {
		t.Fatalf("an attachment of the data directory is still mounted:\n%s", mounts)
	}
	var table struct {
		Exports map[string]string `json:"exports"`
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join(data, "exports.json")), &table); err != nil {
		t.Fatal(err)
	}
	for name := range table.Exports {
		if strings.HasPrefix(name, "instance-") {
			t.Fatalf("export %s left after its instance was deleted", name)
		}
	}
}

// callDB sends a request to the database API as the admin and decodes
// the answer into out, unless out is nil; it returns the status.
func (p *svcProc) callDB(method, path string, body any, out any) int {
	p.t.Helper()
	code, err := p.tryDB(method, path, body, out)
	if err != nil {
		p.t.Fatal(err)
	}
	return code
}

// tryDB is callDB returning its error, for a goroutine or a request a
// kill may cut.
func (p *svcProc) tryDB(method, path string, body any, out any) (int, error) {
	js, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(p.t.Context(), method, p.url+"/v1.0/admin"+path, bytes.NewReader(js))
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Auth-Token", p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: %d: %w", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestInstancesNeedRoot: a service that does not run as root serves
// volumes and lists the installed datastores, but an instance fails with
// a reason that says it needs root, and its delete leaves nothing.
func TestInstancesNeedRoot(t *testing.T) {
	t.Parallel()
	needInstances(t) // root, to run the service as another user
	dir := dbagenttest.ReachableTempDir(t)
	bin := filepath.Join(dir, "cairn")
	if err := os.WriteFile(bin, mustRead(t, binaryFor(t)), 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	data, run, xdg := filepath.Join(dir, "data"), filepath.Join(dir, "run"), filepath.Join(dir, "xdg")
	for _, d := range []string{data, run, xdg} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	p := startServiceCmd(t, data, func(cmd *exec.Cmd) {
		cmd.Path = bin
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+xdg, "HOME="+xdg)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}, "--db-run-dir", run)
	var ds struct {
		Datastores []map[string]any `json:"datastores"`
	}
	if code := p.callDB("GET", "/datastores", nil, &ds); code != 200 || !strings.Contains(fmt.Sprint(ds.Datastores), "postgresql") {
		t.Fatalf("datastores as a user: %d %v", code, ds.Datastores)
	}
	var created struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "pg", "datastore": map[string]any{"type": "postgresql", "version": "15"}, "volume": map[string]any{"size": 1}}},
		&created); code != 202 {
		t.Fatalf("instance create: %d %v", code, created)
	}
	id := created.Instance["id"].(string)
	insts, _ := p.dbSettled()
	in := byID(t, insts, id)
	if reason, _ := in["fail_reason"].(string); in["status"] != "ERROR" || !strings.Contains(reason, "need root") || strings.Contains(reason, dir) {
		t.Fatalf("instance of a service that is not root: %v", in)
	}
	if code := p.callDB("DELETE", "/instances/"+id, nil, nil); code != 202 {
		t.Fatalf("instance delete: %d", code)
	}
	p.dbGone("instances", id)
	p.stop()
	noEngineLeftovers(t, data)
}
