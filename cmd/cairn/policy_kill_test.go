package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// TestPolicyKill9 runs policies made with the CLI on an every-minute
// schedule in a real service, and kills the service with SIGKILL just
// after a slot was recorded and before its backup was queued (between
// the scheduler's two transactions), just after a retention run queued a
// deletion, and in the middle of a restore drill. After each restart the
// interrupted work finishes: every slot is recorded once and queued one
// backup, the removed backup is gone, the newest stays, the drill
// passes and its scratch image is gone, and nothing is left in the
// engine or the repository. The waits are for the slots the schedule
// brings (up to a minute each), announced by the test hooks, never for a
// time window.
func TestPolicyKill9(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdcopy")
	data := filepath.Join(t.TempDir(), "data")
	home := t.TempDir()

	// A volume with 8 MiB of data.
	p := startService(t, data)
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "db"}}, &vol)
	p.settled()
	volID := vol.Volume["id"].(string)
	var att struct{ Attachment struct{ URIs []string } }
	p.mustCall(200, "POST", "/volumes/"+volID+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
	img := filepath.Join(t.TempDir(), "img")
	randomFile(t, img, 8<<20, 15)
	runTool(t, "nbdcopy", img, att.Attachment.URIs[0])
	p.mustCall(202, "POST", "/volumes/"+volID+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
	p.settled()
	p.stop()

	fired := newHookPoint(t, "catalog.slot firing#1")
	p = startServiceEnv(t, data, fired.env())
	cli := func(args ...string) result {
		return runCLI(t, []string{"HOME=" + home}, append(args, "--url", p.url, "--token", p.token)...)
	}
	var pol cairn.Policy
	cliJSON(t, cli, &pol, "policy", "create", "minutely", "--schedule", "* * * * *", "--volume", volID, "--keep-last", "1", "--full-every", "2")
	if pol.Retention.Last != 1 || pol.FullEvery != 2 || pol.Target.IDs[0] != volID || !pol.Enabled {
		t.Fatalf("created %+v", pol)
	}
	procs := []*svcProc{p}
	fired.reached(p.done, p.log.String)
	p.kill()

	// Restarted: the first slot's backup is queued, and the service dies
	// just after that commits, before the slot's events are sent.
	queued := newHookPoint(t, "catalog.slot fired#1")
	p = startServiceEnv(t, data, queued.env())
	procs = append(procs, p)
	queued.reached(p.done, p.log.String)
	p.kill()

	// Restarted: the first slot's events are sent (the outbox), its
	// backup finishes; at the next slot, retention removes it (keep-last
	// 1), and the service dies again just after queuing that.
	pruned := newHookPoint(t, "catalog.backup deleting#1")
	p = startServiceEnv(t, data, pruned.env())
	procs = append(procs, p)
	pruned.reached(p.done, p.log.String)
	p.kill()

	p = startService(t, data)
	procs = append(procs, p)
	cliOK(t, cli, "policy", "update", "minutely", "--disabled")
	p.settled()
	var rep cairn.RetentionReport
	cliJSON(t, cli, &rep, "policy", "prune", "minutely")
	p.settled()

	// A drill of the newest backup, killed while it restores (its
	// scratch image half written), then finished by the next service.
	cliOK(t, cli, "policy", "create", "drill", "--action", "drill", "--schedule", "* * * * *", "--volume", "db") // by name
	p.stop()
	drilling := newHookPoint(t, "store.get "+format.ChunksPrefix+"#1")
	p = startServiceEnv(t, data, drilling.env())
	procs = append(procs, p)
	drilling.reached(p.done, p.log.String)
	p.kill()
	if left, _ := os.ReadDir(filepath.Join(data, "drills")); len(left) != 1 {
		t.Fatalf("killed mid-drill, the scratch directory holds %v, want its image", left)
	}
	p = startService(t, data)
	procs = append(procs, p)
	var drilled string
	for drilled == "" {
		var b wire.Backup
		cliJSON(t, cli, &b, "backup", "show", rep.Targets[0].Backups[0].BackupID)
		if b.Drill != nil {
			drilled = b.Drill.State
			break
		}
		select {
		case <-p.done:
			t.Fatalf("the service exited: %s", p.log.String())
		case <-time.After(100 * time.Millisecond): // polls the state the test waits for
		}
	}
	if drilled != cairn.CheckPassed {
		t.Fatalf("the drill after the kill: %s", drilled)
	}
	cliOK(t, cli, "policy", "update", "drill", "--disabled")
	p.settled()
	if left, _ := os.ReadDir(filepath.Join(data, "drills")); len(left) != 0 {
		t.Fatalf("drills left %v", left)
	}

	var slots []cairn.PolicySlot
	cliJSON(t, cli, &slots, "policy", "slots", "minutely", "--limit", "1000")
	seen := map[time.Time]bool{}
	var backups []string
	for _, sl := range slots {
		if seen[sl.SlotAt] || sl.SlotAt.Second() != 0 {
			t.Fatalf("slot %s recorded twice or off the minute: %+v", sl.SlotAt, slots)
		}
		seen[sl.SlotAt] = true
		switch sl.State {
		case cairn.SlotFired:
			if len(sl.Runs) != 1 || sl.Runs[0].BackupID == "" {
				t.Fatalf("fired slot %+v", sl)
			}
			backups = append(backups, sl.Runs[0].BackupID)
		case cairn.SlotMissed:
			// Only while the service was down, and said so.
			if !strings.Contains(sl.Detail, "no service fired it") {
				t.Fatalf("missed slot without its reason: %+v", sl)
			}
		default:
			t.Fatalf("slot %+v", sl)
		}
	}
	if len(backups) < 2 {
		t.Fatalf("%d slots fired, want at least 2: %+v", len(backups), slots)
	}
	// Every slot has its event, in the log of one of the services (the
	// notifications are logged with their delivery IDs), however it was
	// cut short. The first slot's was sent by the service after the one
	// killed as its queuing committed.
	var logs strings.Builder
	for _, q := range procs {
		logs.WriteString(q.log.String())
	}
	for _, sl := range slots {
		typ := map[string]string{cairn.SlotFired: "schedule.fired", cairn.SlotMissed: "schedule.missed"}[sl.State]
		if id := service.SlotEventID(pol.ID, sl.SlotAt, typ, ""); !strings.Contains(logs.String(), id) {
			t.Errorf("slot %s (%s) has no %s event (delivery %s) in any service's log", sl.SlotAt, sl.State, typ, id)
		}
	}
	oldest := slots[len(slots)-1]
	if id := service.SlotEventID(pol.ID, oldest.SlotAt, "schedule.fired", ""); strings.Contains(procs[1].log.String(), id) ||
		!strings.Contains(procs[2].log.String(), id) {
		t.Errorf("the first slot's event (delivery %s): sent by the service killed before it, or not by the next", id)
	}
	// Newest first: the newest backup is available, every older one gone.
	for i, id := range backups {
		var b struct{ Backup map[string]any }
		code := p.call("GET", "/backups/"+id, nil, &b)
		switch {
		case i == 0 && (code != 200 || b.Backup["status"] != "available"):
			t.Fatalf("the newest backup %s: %d %v", id, code, b.Backup)
		case i > 0 && code != 404:
			t.Fatalf("backup %s of an older slot: %d %v, want it removed", id, code, b.Backup)
		}
	}
	p.stop()
	checkNoLeftovers(t, data)
	repoCheck(t, data)
}
