package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volume"
)

// svcProc is one 'cairn serve' process over a data directory.
type svcProc struct {
	t     *testing.T
	data  string
	url   string
	token string
	cmd   *exec.Cmd
	done  chan struct{}
	log   *lockedBuffer
}

// lockedBuffer collects a process's stderr, which exec copies from
// another goroutine while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dbPortBlocks gives each data directory a block of database ports of
// its own (--db-ports), the same for every service started on it, so
// that tests whose data planes run at once never race for one port. The
// blocks start at CAIRN_TEST_DB_PORT_BASE (default 21000): two test
// processes on one machine need bases far apart.
var dbPortBlocks = struct {
	sync.Mutex
	next int
	of   map[string]int
}{of: map[string]int{}}

func dbPorts(data string) string {
	dbPortBlocks.Lock()
	defer dbPortBlocks.Unlock()
	if dbPortBlocks.next == 0 {
		dbPortBlocks.next = 21000
		if n, err := strconv.Atoi(os.Getenv("CAIRN_TEST_DB_PORT_BASE")); err == nil && n > 1024 && n < 60000 {
			dbPortBlocks.next = n
		}
	}
	lo, ok := dbPortBlocks.of[data]
	if !ok {
		lo = dbPortBlocks.next
		dbPortBlocks.next += 50
		dbPortBlocks.of[data] = lo
	}
	return fmt.Sprintf("%d-%d", lo, lo+49)
}

// startService starts cairn serve on data and waits for its API.
func startService(t *testing.T, data string, extra ...string) *svcProc {
	t.Helper()
	return startServiceEnv(t, data, nil, extra...)
}

// startServiceEnv starts cairn serve on data with env added to the
// test's environment, and waits for its API.
func startServiceEnv(t *testing.T, data string, env []string, extra ...string) *svcProc {
	t.Helper()
	return startServiceCmd(t, data, func(cmd *exec.Cmd) { cmd.Env = append(cmd.Env, env...) }, extra...)
}

// startServiceCmd starts cairn serve on data, its command changed by
// prepare, and waits for its API.
func startServiceCmd(t *testing.T, data string, prepare func(*exec.Cmd), extra ...string) *svcProc {
	t.Helper()
	cleanupDataPlane(t, data)
	addr := freePort(t)
	// Backups run at nice 0: the suite runs beside CPU hogs at nice 0
	// (stress-ng in CI), which leave a niced backup thread a tenth of a
	// core's share by design, and these tests wait for backups to end,
	// not for the scheduler's priorities (internal/repo tests those).
	args := append([]string{"serve", "--data-dir", data, "--listen", addr, "--log-format", "text", "--backup-nice", "0",
		"--kdf-time", "1", "--kdf-memory", "64", "--kdf-threads", "1", "--db-ports", dbPorts(data)}, extra...)
	cmd := exec.Command(binaryFor(t), args...)
	cmd.Env = os.Environ()
	prepare(cmd)
	p := &svcProc{t: t, data: data, url: "http://" + addr, cmd: cmd, done: make(chan struct{}), log: &lockedBuffer{}}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	deadline := time.Now().Add(pointTimeout)
	for {
		if resp, err := http.Get(p.url + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-p.done:
			t.Fatalf("cairn serve exited: %s", p.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("cairn serve did not start: %s", p.log.String())
		}
	}
	tok, err := os.ReadFile(filepath.Join(data, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(tok))
	return p
}

// stop ends the process with SIGTERM (a clean shutdown).
func (p *svcProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process with SIGKILL.
func (p *svcProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// call sends a request as the admin and decodes the answer.
func (p *svcProc) call(method, path string, body any, out any) int {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, p.url+"/v3/admin"+path, rd)
	req.Header.Set("X-Auth-Token", p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			p.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode
}

func (p *svcProc) mustCall(want int, method, path string, body any, out any) {
	p.t.Helper()
	var raw json.RawMessage
	if code := p.call(method, path, body, &raw); code != want {
		p.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, raw)
	}
	if out != nil {
		_ = json.Unmarshal(raw, out)
	}
}

// settled waits until every resource has left its transient status.
func (p *svcProc) settled() {
	p.t.Helper()
	deadline := time.Now().Add(pointTimeout)
	for time.Now().Before(deadline) {
		busy := ""
		for _, kind := range []string{"volumes", "snapshots", "backups"} {
			var out map[string][]map[string]any
			p.mustCall(200, "GET", "/"+kind+"/detail?limit=1000", nil, &out)
			for _, r := range out[kind] {
				switch r["status"] {
				case "available", "in-use", "error", "error_deleting":
				default:
					busy = fmt.Sprintf("%s %s is %s", kind, r["id"], r["status"])
				}
			}
		}
		if busy == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("resources still transient after 120 s: %s", p.log.String())
}

// TestServiceKill9 kills the service with SIGKILL inside every kind of
// task, at points the binary's test hooks announce (the task was claimed,
// its backup session started, chunks stored or read, the manifest stored,
// the catalog updated), starts it again, and checks that each kill cut a
// task short, that each task completes or ends in error, that no resource
// stays in a transient state, and that no temporary snapshot or volume is
// left in the engine.
func TestServiceKill9(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdcopy")
	data := filepath.Join(t.TempDir(), "data")
	p := startService(t, data)
	// A 1 GiB volume with 256 MiB of random data written over NBD: 64
	// chunks of 4 MiB.
	const dataChunks = 64
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "src"}}, &vol)
	p.settled()
	src := vol.Volume["id"].(string)
	var att struct{ Attachment struct{ URIs []string } }
	p.mustCall(200, "POST", "/volumes/"+src+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
	img := filepath.Join(t.TempDir(), "img")
	want := randomFile(t, img, 256<<20, 42)
	runTool(t, "nbdcopy", img, att.Attachment.URIs[0])
	p.mustCall(202, "POST", "/volumes/"+src+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
	var snap struct{ Snapshot map[string]any }
	p.mustCall(202, "POST", "/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": src}}, &snap)
	p.settled()
	snapID := snap.Snapshot["id"].(string)
	p.stop()

	r := rand.New(rand.NewPCG(7, 7))
	// Points every backup passes; the first one also stores the chunks.
	backupPoints := []string{"catalog.task backup.create running#1", "store.put " + format.SessionsPrefix + "#1",
		"store.put " + format.IndexesPrefix + "#1", "store.put " + format.BackupsPrefix + "#1", "catalog.backup available#1"}
	ops := []struct {
		name   string
		points func(round int) []string
		do     func(p *svcProc) string // returns the resource to check
	}{
		{"backup of a volume", func(round int) []string {
			if round == 0 {
				return []string{fmt.Sprintf("store.put %s#%d", format.ChunksPrefix, 1+r.IntN(dataChunks))}
			}
			return backupPoints
		}, func(p *svcProc) string {
			var b struct{ Backup map[string]any }
			p.mustCall(202, "POST", "/backups", map[string]any{"backup": map[string]any{"volume_id": src}}, &b)
			return b.Backup["id"].(string)
		}},
		{"backup of a snapshot", func(int) []string { return backupPoints }, func(p *svcProc) string {
			var b struct{ Backup map[string]any }
			p.mustCall(202, "POST", "/backups", map[string]any{"backup": map[string]any{"snapshot_id": snapID}}, &b)
			return b.Backup["id"].(string)
		}},
		{"restore into a new volume", func(int) []string {
			return []string{"catalog.task backup.restore running#1",
				fmt.Sprintf("store.get %s#%d", format.ChunksPrefix, 1+r.IntN(dataChunks)), "catalog.volume available#1"}
		}, func(p *svcProc) string {
			id := anyAvailableBackup(p)
			if id == "" {
				p.t.Fatal("no available backup to restore")
			}
			var res struct{ Restore map[string]string }
			p.mustCall(202, "POST", "/backups/"+id+"/restore", map[string]any{"restore": map[string]any{}}, &res)
			return res.Restore["volume_id"]
		}},
		{"volume from a snapshot", func(int) []string {
			return []string{"catalog.task volume.create running#1", "catalog.volume available#1"}
		}, func(p *svcProc) string {
			var v struct{ Volume map[string]any }
			p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"snapshot_id": snapID}}, &v)
			return v.Volume["id"].(string)
		}},
		{"delete a backup", func(int) []string {
			return []string{"catalog.task backup.delete running#1", "store.delete " + format.BackupsPrefix + "#1", "store.list " + format.ChunksPrefix + "#1"}
		}, func(p *svcProc) string {
			id := anyAvailableBackup(p)
			if id == "" {
				p.t.Fatal("no available backup to delete")
			}
			p.mustCall(202, "DELETE", "/backups/"+id, nil, nil)
			return id
		}},
	}
	for round := range 10 {
		op := ops[round%len(ops)]
		points := op.points(round)
		at := points[r.IntN(len(points))]
		// A service of its own per round: the events it counts are this
		// round's task's.
		point := newHookPoint(t, at)
		p = startServiceEnv(t, data, point.env())
		id := op.do(p)
		point.reached(p.done, p.log.String)
		p.kill()
		p = startService(t, data)
		p.settled()
		if !strings.Contains(p.log.String(), "task interrupted by a restart") {
			t.Fatalf("round %d: %s %s killed at %s, and no task was cut short: %s", round, op.name, id, at, p.log.String())
		}
		t.Logf("round %d: %s %s: killed at %s", round, op.name, id, at)
		p.stop()
	}
	checkNoLeftovers(t, data)

	// Every available backup restores the source's bytes.
	p = startService(t, data)
	var list map[string][]map[string]any
	p.mustCall(200, "GET", "/backups/detail", nil, &list)
	restored := 0
	for _, b := range list["backups"] {
		if b["status"] != "available" {
			continue
		}
		var res struct{ Restore map[string]string }
		p.mustCall(202, "POST", "/backups/"+b["id"].(string)+"/restore", map[string]any{"restore": map[string]any{}}, &res)
		p.settled()
		var att struct{ Attachment struct{ URIs []string } }
		p.mustCall(200, "POST", "/volumes/"+res.Restore["volume_id"]+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
		got := filepath.Join(t.TempDir(), "got")
		runTool(t, "nbdcopy", att.Attachment.URIs[0], got)
		if !sameImage(t, got, want) {
			t.Fatalf("backup %s restores different bytes", b["id"])
		}
		os.Remove(got)
		restored++
	}
	if restored == 0 {
		t.Fatal("no backup survived the kills to restore")
	}
	t.Logf("%d backups restored byte-identical", restored)
}

// sameImage reports whether the file at path holds want and then only
// zeros, reading it 4 MiB at a time.
func sameImage(t *testing.T, path string, want []byte) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := 0; ; off += len(buf) {
		n, err := io.ReadFull(f, buf)
		b := buf[:n]
		if off < len(want) {
			k := min(len(b), len(want)-off)
			if !bytes.Equal(b[:k], want[off:off+k]) {
				return false
			}
			b = b[k:]
		}
		if !allZero(b) {
			return false
		}
		if err != nil {
			return off+n >= len(want)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func anyAvailableBackup(p *svcProc) string {
	var list map[string][]map[string]any
	p.mustCall(200, "GET", "/backups/detail", nil, &list)
	for _, b := range list["backups"] {
		if b["status"] == "available" {
			return b["id"].(string)
		}
	}
	return ""
}

// checkNoLeftovers opens a stopped service's catalog and engine: no row
// in a transient state, no unfinished task, and every engine volume and
// snapshot is a catalog one (no temporary snapshot or half-made volume).
func checkNoLeftovers(t *testing.T, data string) {
	t.Helper()
	ctx := t.Context()
	cat, err := sqlite.Open(ctx, filepath.Join(data, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	vols, snaps := map[string]bool{}, map[string]bool{}
	err = cat.View(ctx, func(tx catalog.Tx) error {
		vl, err := tx.Volumes(ctx, catalog.Filter{})
		if err != nil {
			return err
		}
		for _, v := range vl {
			vols[v.ID] = true
			if !stable(v.Status) {
				t.Errorf("volume %s left %s", v.ID, v.Status)
			}
		}
		sl, err := tx.Snapshots(ctx, catalog.Filter{})
		if err != nil {
			return err
		}
		for _, s := range sl {
			snaps[s.ID] = true
			if !stable(s.Status) {
				t.Errorf("snapshot %s left %s", s.ID, s.Status)
			}
		}
		bl, err := tx.Backups(ctx, catalog.Filter{})
		if err != nil {
			return err
		}
		for _, b := range bl {
			if !stable(b.Status) {
				t.Errorf("backup %s left %s", b.ID, b.Status)
			}
			if b.TempSnapshotEngineID != "" {
				t.Errorf("backup %s still names a temporary snapshot", b.ID)
			}
		}
		tl, err := tx.Tasks(ctx, catalog.Filter{})
		if err != nil {
			return err
		}
		failed := 0
		for _, task := range tl {
			switch task.State {
			case cairn.TaskDone:
			case cairn.TaskFailed:
				failed++
				t.Logf("task %s %s failed: %s", task.Kind, task.ResourceID, task.Error)
			default:
				t.Errorf("task %s %s left %s", task.Kind, task.ResourceID, task.State)
			}
		}
		t.Logf("%d tasks, %d failed", len(tl), failed)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := volume.Open(data, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	for _, v := range eng.Volumes() {
		if !vols[v.Name] {
			t.Errorf("engine volume %s (%s) has no catalog volume: leaked", v.ID.Short(), v.Name)
		}
	}
	for _, s := range eng.Snapshots(cairn.ID{}) {
		if !snaps[s.Name] {
			t.Errorf("engine snapshot %s (%s) has no catalog snapshot: leaked", s.ID.Short(), s.Name)
		}
	}
}

func stable(s cairn.Status) bool {
	switch s {
	case cairn.StatusAvailable, cairn.StatusInUse, cairn.StatusError, cairn.StatusErrorDeleting:
		return true
	}
	return false
}
