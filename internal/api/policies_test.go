package api_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// TestBackupPolicies drives /backup-policies over HTTP against the real
// engine and repository: create (defaults filled, the first slot the
// schedule's next in its zone), show, list, another project's 404, bad
// definitions 400 or 404 changing nothing; two slots fired through the
// injected clock make a full and an incremental backup, each restoring
// the volume's bytes; the slots list them; a dry run of keep-last 1
// says what it would remove and why, the real run removes it and its
// deletion reports the chunk only it held freed; disable, delete.
func TestBackupPolicies(t *testing.T) {
	// The injected clock runs ahead of the engine's real one (snapshots
	// carry real times), in a year whose spring-forward night in Berlin
	// is the last Sunday of March.
	year := time.Now().Year() + 2
	gap := time.Date(year, 3, 31, 1, 0, 0, 0, time.UTC) // 03:00 CEST
	for gap.Weekday() != time.Sunday {
		gap = gap.AddDate(0, 0, -1)
	}
	clock := testenv.NewClock(gap.Add(-2*time.Hour - 20*time.Minute))
	e := newEnvAt(t, t.TempDir(), t.TempDir(), func(c *service.Config) { c.Now = clock.Now })
	vol := e.createVolume(e.tokA, "alpha", 1, "db")

	body := map[string]any{"policy": map[string]any{"name": "nightly",
		"target": map[string]any{"kind": "volume", "ids": []string{vol}}, "schedule": "30 2 * * *",
		"time_zone": "Europe/Berlin", "retention": map[string]any{"keep_last": 1}}}
	p := object(t, "create", e.call(201, e.tokA, "POST", "/v3/alpha/backup-policies", body), "policy")
	id := p["id"].(string)
	// 02:30 does not happen in Berlin that night: the slot is the gap's
	// end, 03:00 CEST.
	if p["next_slot_at"] != gap.Format(time.RFC3339) || p["full_every"] != float64(7) || p["catch_up"] != "once" || p["enabled"] != true {
		t.Fatalf("created %v", p)
	}
	members(t, "create", p, []string{"action", "catch_up", "created_at", "enabled", "full_every", "id", "jitter_seconds", "name",
		"next_fire_at", "next_slot_at", "project_id", "retention", "schedule", "target", "time_zone", "updated_at"})
	object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/backup-policies/"+id, nil), "policy")
	if list := e.call(200, e.tokA, "GET", "/v3/alpha/backup-policies", nil)["policies"].([]any); len(list) != 1 {
		t.Fatalf("alpha's list: %v", list)
	}
	if list := e.call(200, e.tokB, "GET", "/v3/beta/backup-policies", nil)["policies"].([]any); len(list) != 0 {
		t.Fatalf("beta's list: %v", list)
	}
	if list := e.call(200, e.admin, "GET", "/v3/admin/backup-policies?all_tenants=1", nil)["policies"].([]any); len(list) != 1 {
		t.Fatalf("the admin's list of all: %v", list)
	}

	before := e.state()
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		code                      int
	}{
		{"beta's show", e.tokB, "GET", "/v3/beta/backup-policies/" + id, nil, 404},
		{"beta's delete", e.tokB, "DELETE", "/v3/beta/backup-policies/" + id, nil, 404},
		{"beta's retention", e.tokB, "POST", "/v3/beta/backup-policies/" + id + "/retention", map[string]any{"retention": map[string]any{"dry_run": true}}, 404},
		{"beta naming alpha's volume", e.tokB, "POST", "/v3/beta/backup-policies", body, 404},
		{"the same name again", e.tokA, "POST", "/v3/alpha/backup-policies", body, 409},
		{"an unknown field", e.tokA, "POST", "/v3/alpha/backup-policies", map[string]any{"policy": map[string]any{"name": "x", "cron": "@daily"}}, 400},
		{"a bad schedule", e.tokA, "POST", "/v3/alpha/backup-policies", map[string]any{"policy": map[string]any{"name": "x",
			"target": map[string]any{"kind": "volume", "ids": []string{vol}}, "schedule": "every night"}}, 400},
		{"a bad zone", e.tokA, "POST", "/v3/alpha/backup-policies", map[string]any{"policy": map[string]any{"name": "x",
			"target": map[string]any{"kind": "volume", "ids": []string{vol}}, "schedule": "@daily", "time_zone": "Berlin"}}, 400},
		{"a bad slot limit", e.tokA, "GET", "/v3/alpha/backup-policies/" + id + "/slots?limit=0", nil, 400},
		{"no body", e.tokA, "POST", "/v3/alpha/backup-policies/" + id + "/retention", nil, 400},
		{"an unknown policy", e.tokA, "GET", "/v3/alpha/backup-policies/nope", nil, 404},
	} {
		if code := e.do(tc.token, tc.method, tc.path, tc.body, nil); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	if after := e.state(); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused requests changed the state:\n%+v\n%+v", before, after)
	}

	// Two slots: that night's (03:00 CEST) and the next (02:30 CEST).
	var backups []string
	for i, at := range []time.Time{gap, gap.Add(23*time.Hour + 30*time.Minute)} {
		// Each slot's data differs: the first backup holds a chunk the
		// second does not, which its removal frees.
		e.write(vol, 0, bytes.Repeat([]byte{'p', 'o', 'l', 'i', 'c', byte('y' - i)}, 4096))
		want := e.digest(vol, 1<<30)
		clock.Set(at.Add(time.Minute))
		if n, err := e.svc.FireDue(t.Context()); err != nil || n != 1 {
			t.Fatalf("slot %d: FireDue %d, %v", i, n, err)
		}
		slots := e.call(200, e.tokA, "GET", "/v3/alpha/backup-policies/"+id+"/slots?limit=1", nil)["slots"].([]any)
		slot := slots[0].(map[string]any)
		runs := slot["runs"].([]any)
		if slot["state"] != "fired" || slot["slot_at"] != at.Format(time.RFC3339) || len(runs) != 1 {
			t.Fatalf("slot %d: %v", i, slot)
		}
		run := runs[0].(map[string]any)
		if full, _ := run["full"].(bool); full != (i == 0) {
			t.Fatalf("slot %d: full %v", i, run["full"])
		}
		b := run["backup_id"].(string)
		if got := e.wait(e.tokA, "alpha", "backup", b); got["status"] != string(cairn.StatusAvailable) || got["is_incremental"] != (i == 1) {
			t.Fatalf("slot %d's backup: %v", i, got)
		}
		backups = append(backups, b)
		restored := object(t, "restore", e.call(202, e.tokA, "POST", "/v3/alpha/backups/"+b+"/restore", map[string]any{"restore": map[string]any{}}), "restore")
		nv := restored["volume_id"].(string)
		e.wait(e.tokA, "alpha", "volume", nv)
		if e.digest(nv, 1<<30) != want {
			t.Fatalf("slot %d's backup does not restore the volume's bytes", i)
		}
		e.must(202, e.tokA, "DELETE", "/v3/alpha/volumes/"+nv, nil, nil)
		e.wait(e.tokA, "alpha", "volume", nv)
	}

	dry := object(t, "dry run", e.call(200, e.tokA, "POST", "/v3/alpha/backup-policies/"+id+"/retention",
		map[string]any{"retention": map[string]any{"dry_run": true}}), "retention")
	decisions := dry["targets"].([]any)[0].(map[string]any)["backups"].([]any)
	first, second := decisions[0].(map[string]any), decisions[1].(map[string]any)
	if dry["removed"] != float64(1) || first["backup_id"] != backups[1] || first["action"] != "keep" ||
		second["backup_id"] != backups[0] || second["action"] != "remove" {
		t.Fatalf("dry run: %v", dry)
	}
	if reasons := first["reasons"].([]any); len(reasons) != 2 || reasons[0] != "newest" || reasons[1] != "keep-last" {
		t.Fatalf("the kept backup's reasons: %v", reasons)
	}
	if e.wait(e.tokA, "alpha", "backup", backups[0]) == nil {
		t.Fatal("the dry run removed a backup")
	}
	real := object(t, "retention", e.call(202, e.tokA, "POST", "/v3/alpha/backup-policies/"+id+"/retention",
		map[string]any{"retention": map[string]any{}}), "retention")
	if real["removed"] != float64(1) || real["dry_run"] != false {
		t.Fatalf("retention: %v", real)
	}
	if e.wait(e.tokA, "alpha", "backup", backups[0]) != nil {
		t.Fatal("the removed backup is still there")
	}
	if e.wait(e.tokA, "alpha", "backup", backups[1]) == nil {
		t.Fatal("the kept backup is gone")
	}
	// The removal collected what nothing references, and said so.
	// (The event follows the row's deletion: it is waited for.)
	var gc map[string]any
	for gc == nil {
		select {
		case ev := <-e.events.ch:
			if ev.Type == "backup.delete.end" && ev.Payload["id"] == backups[0] {
				if gc, _ = ev.Payload["gc"].(map[string]any); gc == nil {
					t.Fatalf("backup.delete.end of the removed backup without what it freed: %v", ev.Payload)
				}
			}
		case <-time.After(time.Minute):
			t.Fatal("no backup.delete.end event of the removed backup")
		}
	}
	deleted, _ := gc["chunks_deleted"].(int)
	pending, _ := gc["chunks_pending"].(int)
	freed, _ := gc["bytes_freed"].(int64)
	waiting, _ := gc["bytes_pending"].(int64)
	if deleted+pending == 0 || freed+waiting <= 0 {
		t.Fatalf("backup.delete.end of the removed backup: gc %v, want the chunk only it held freed (or pending)", gc)
	}

	body["policy"].(map[string]any)["enabled"] = false
	if p := object(t, "disable", e.call(200, e.tokA, "PUT", "/v3/alpha/backup-policies/"+id, body), "policy"); p["enabled"] != false {
		t.Fatalf("disabled: %v", p)
	}
	clock.Set(gap.AddDate(0, 0, 7))
	if n, err := e.svc.FireDue(t.Context()); err != nil || n != 0 {
		t.Fatalf("a disabled policy fired: %d, %v", n, err)
	}
	e.must(204, e.tokA, "DELETE", "/v3/alpha/backup-policies/"+id, nil, nil)
	e.must(404, e.tokA, "GET", "/v3/alpha/backup-policies/"+id, nil, nil)
	e.settle()
}

// TestBackupChecks proves a backup in the real repository: a volume
// holding an ext4 file system is backed up; a verify policy reads its
// chunks back and a drill policy restores it to a scratch image where
// e2fsck -fn finds the file system clean. Then a byte of one of its
// chunks is flipped on disk: the next verification finds it, and the
// drill of that backup fails loudly (marks, events), leaving no image.
// A protected backup is not deleted.
func TestBackupChecks(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is not installed (Debian: e2fsprogs)")
		}
	}
	year := time.Now().Year() + 2
	clock := testenv.NewClock(time.Date(year, 6, 1, 9, 50, 0, 0, time.UTC))
	scratch := t.TempDir()
	e := newEnvAt(t, t.TempDir(), t.TempDir(), func(c *service.Config) { c.Now, c.ScratchDir = clock.Now, scratch })
	e.members = true
	vol := e.createVolume(e.tokA, "alpha", 1, "fs")
	img := filepath.Join(t.TempDir(), "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	fs, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	e.write(vol, 0, fs)
	var created map[string]map[string]any
	e.must(202, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "name": "fs"}}, &created)
	b := created["backup"]["id"].(string)
	e.wait(e.tokA, "alpha", "backup", b)

	policy := func(name, action string, extra map[string]any) string {
		body := map[string]any{"name": name, "action": action, "target": map[string]any{"kind": "volume", "ids": []string{vol}}, "schedule": "0 * * * *"}
		for k, v := range extra {
			body[k] = v
		}
		return object(t, name, e.call(201, e.tokA, "POST", "/v3/alpha/backup-policies", map[string]any{"policy": body}), "policy")["id"].(string)
	}
	policy("verify", "verify", map[string]any{"reverify_days": 1})
	policy("drill", "drill", nil)
	shown := func() map[string]any {
		return object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/backups/"+b, nil), "backup")
	}
	fire := func(at time.Time, slots int) {
		clock.Set(at)
		if n, err := e.svc.FireDue(t.Context()); err != nil || n != slots {
			t.Fatalf("FireDue at %s: %d slots, %v; want %d", at, n, err, slots)
		}
		e.settle()
	}
	fire(time.Date(year, 6, 1, 10, 0, 0, 0, time.UTC), 2)
	got := shown()
	v, d := got["verification"].(map[string]any), got["drill"].(map[string]any)
	if v["state"] != "passed" || v["chunks"].(float64) == 0 || got["protected"] != false || got["verify_state"] != "passed" || got["verified_at"] != v["at"] {
		t.Fatalf("verification: %v", got)
	}
	if seconds, _ := d["seconds"].(float64); d["state"] != "passed" || !strings.Contains(d["detail"].(string), "e2fsck -fn found the file system clean") ||
		d["bytes"].(float64) != 1<<30 || seconds <= 0 {
		t.Fatalf("drill: %v", d)
	}

	// A flipped byte in one of the backup's chunks, on disk.
	var chunks []string
	_ = filepath.WalkDir(filepath.Join(e.store, "volumebackups", "chunks"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			chunks = append(chunks, p)
		}
		return nil
	})
	if len(chunks) == 0 {
		t.Fatal("no chunk files in the container")
	}
	raw, err := os.ReadFile(chunks[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	if err := os.WriteFile(chunks[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Two days on (47 slots of each policy missed, the 48th fired):
	// verified again (reverify_days 1), and drilled.
	fire(time.Date(year, 6, 3, 10, 0, 0, 0, time.UTC), 96)
	got = shown()
	v, d = got["verification"].(map[string]any), got["drill"].(map[string]any)
	if v["state"] != "failed" || !strings.Contains(v["detail"].(string), "corrupt-chunk") || got["verify_state"] != "failed" || got["verified_at"] != v["at"] {
		t.Fatalf("verification of the damaged backup: %v", v)
	}
	if d["state"] != "failed" || !strings.Contains(d["detail"].(string), "corrupt") {
		t.Fatalf("drill of the damaged backup: %v", d)
	}
	seen := map[string]bool{}
	for len(e.events.ch) > 0 {
		if ev := <-e.events.ch; ev.Payload["id"] == b {
			seen[ev.Type] = true
		}
	}
	for _, typ := range []string{"backup.verify.end", "backup.drill.end", "backup.verify.error", "backup.drill.error"} {
		if !seen[typ] {
			t.Errorf("no %s event", typ)
		}
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Fatalf("drills left %v", left)
	}
	// And the metric: one of each check passed, then failed.
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"drill", "verify"} {
		for _, result := range []string{"failed", "passed"} {
			if want := `cairn_backup_checks_total{kind="` + kind + `",result="` + result + `"} 1`; !strings.Contains(string(metrics), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	}

	// Protected: not deleted until unprotected.
	e.must(200, e.tokA, "POST", "/v3/alpha/backups/"+b+"/action", map[string]any{"cairn-protect": map[string]any{"protected": true}}, nil)
	if shown()["protected"] != true {
		t.Fatal("not shown protected")
	}
	e.must(409, e.tokA, "DELETE", "/v3/alpha/backups/"+b, nil, nil)
	e.must(404, e.tokB, "POST", "/v3/beta/backups/"+b+"/action", map[string]any{"cairn-protect": map[string]any{"protected": false}}, nil)
	e.must(400, e.tokA, "POST", "/v3/alpha/backups/"+b+"/action", map[string]any{}, nil)
	e.must(200, e.tokA, "POST", "/v3/alpha/backups/"+b+"/action", map[string]any{"cairn-protect": map[string]any{"protected": false}}, nil)
	e.must(202, e.tokA, "DELETE", "/v3/alpha/backups/"+b, nil, nil)
	e.settle()
}

// TestBackupChecksSampledAndBrokenFS: a verify policy's verify_share
// reaches the verification, which reads some of the backup's chunks and
// not all; a drill of a backup whose chunks are sound but whose ext4
// file system is broken (its root inode cleared before the backup) fails,
// with e2fsck's findings in the detail.
func TestBackupChecksSampledAndBrokenFS(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is not installed (Debian: e2fsprogs)")
		}
	}
	year := time.Now().Year() + 2
	clock := testenv.NewClock(time.Date(year, 6, 1, 9, 50, 0, 0, time.UTC))
	e := newEnvAt(t, t.TempDir(), t.TempDir(), func(c *service.Config) { c.Now, c.ScratchDir = clock.Now, t.TempDir() })
	e.members = true
	backup := func(vol, container string) string {
		var created map[string]map[string]any
		e.must(202, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "name": container, "container": container}}, &created)
		b := created["backup"]["id"].(string)
		e.wait(e.tokA, "alpha", "backup", b)
		if st := object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/backups/"+b, nil), "backup")["status"]; st != "available" {
			t.Fatalf("backup to %s: %v", container, st)
		}
		return b
	}
	policy := func(name, action, vol string, extra map[string]any) {
		body := map[string]any{"name": name, "action": action, "target": map[string]any{"kind": "volume", "ids": []string{vol}}, "schedule": "0 * * * *"}
		for k, v := range extra {
			body[k] = v
		}
		e.call(201, e.tokA, "POST", "/v3/alpha/backup-policies", map[string]any{"policy": body})
	}

	// 32 MiB of random data, in a container of its own.
	sampled := e.createVolume(e.tokA, "alpha", 1, "sampled")
	data := make([]byte, 32<<20)
	if _, err := rand.NewChaCha8([32]byte{7}).Read(data); err != nil {
		t.Fatal(err)
	}
	e.write(sampled, 0, data)
	sb := backup(sampled, "sampled")
	policy("sample", "verify", sampled, map[string]any{"verify_share": 0.1})

	// An ext4 file system whose root inode is cleared.
	broken := e.createVolume(e.tokA, "alpha", 1, "unsound")
	img := filepath.Join(t.TempDir(), "fs.img")
	for _, cmd := range [][]string{
		{"mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", img, "32M"},
		{"debugfs", "-w", "-R", "clri <2>", img},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd[0], err, out)
		}
	}
	fs, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	e.write(broken, 0, fs)
	bb := backup(broken, "fsck")
	policy("drill-broken", "drill", broken, nil)

	clock.Set(time.Date(year, 6, 1, 10, 0, 0, 0, time.UTC))
	if n, err := e.svc.FireDue(t.Context()); err != nil || n != 2 {
		t.Fatalf("FireDue: %d slots, %v; want 2", n, err)
	}
	e.settle()

	var total int
	_ = filepath.WalkDir(filepath.Join(e.store, "sampled", "chunks"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			total++
		}
		return nil
	})
	v := object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/backups/"+sb, nil), "backup")["verification"].(map[string]any)
	// Each chunk is read with probability 0.1: all of 8 or more read by
	// chance is at most one in 10^8.
	if read, _ := v["chunks"].(float64); v["state"] != "passed" || read < 1 || int(read) >= total || total < 8 {
		t.Fatalf("sampled verification read %v of %d chunks: %v", v["chunks"], total, v)
	}
	shown := object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/backups/"+bb, nil), "backup")
	t.Logf("the sampled verification read %v of the backup's %d chunks", v["chunks"], total)
	d, ok := shown["drill"].(map[string]any)
	if !ok {
		t.Fatalf("no drill of the broken file system's backup: %v", shown)
	}
	if d["state"] != "failed" || !strings.Contains(d["detail"].(string), "e2fsck -fn: exit") || !strings.Contains(d["detail"].(string), "Root inode not allocated") {
		t.Fatalf("drill of the broken file system: %v", d)
	}
}
