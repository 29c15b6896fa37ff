package service_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// instanceCheckPolicy is a policy of action on instance id, at minute
// of every hour.
func instanceCheckPolicy(name, action, minute, id string) service.PolicyRequest {
	return service.PolicyRequest{Name: name, Spec: cairn.PolicySpec{Action: action,
		Target:   cairn.PolicyTarget{Kind: cairn.TargetInstance, IDs: []string{id}},
		Schedule: minute + " * * * *", TimeZone: "Europe/Berlin"}}
}

// TestPolicyInstanceVerifyDrill: a verify policy of an instance reads
// back its backups' data and overlay; a drill policy restores the newest
// from the repository (not from the snapshot the host still has) into a
// scratch instance, has the host check it and run the policy's query,
// and removes it. A drill cut short by a restart is finished by the next
// service, the scratch instance of the first attempt gone. A query the
// check fails, and a backup damaged at rest, fail both loudly.
func TestPolicyInstanceVerifyDrill(t *testing.T) {
	r, clock := newPolicyRig(t, time.Date(2026, 6, 1, 9, 50, 0, 0, time.UTC))
	ctx := t.Context()
	f := &fixture{}
	makeInstance(r, f)
	makeDBBackup(r, f)
	b1 := f.backup

	verify := instanceCheckPolicy("verify", cairn.PolicyActionVerify, "30", f.vol)
	verify.Spec.ReverifyDays = 1
	ver := must[cairn.Policy](t)(r.svc.CreatePolicy(ctx, caller, verify))
	drill := instanceCheckPolicy("drill", cairn.PolicyActionDrill, "45", f.vol)
	drill.Spec.DrillQuery, drill.Spec.DrillDatabase = "SELECT count(*) FROM orders", "app"
	dr := must[cairn.Policy](t)(r.svc.CreatePolicy(ctx, caller, drill))
	for _, tc := range []struct {
		name string
		edit func(*service.PolicyRequest)
	}{
		{"a database without a query", func(q *service.PolicyRequest) { q.Spec.DrillQuery = "" }},
		{"a bad database name", func(q *service.PolicyRequest) { q.Spec.DrillDatabase = "a/b" }},
		{"a query too long", func(q *service.PolicyRequest) { q.Spec.DrillQuery = strings.Repeat("x", 5000) }},
		{"a query on a verify policy", func(q *service.PolicyRequest) { q.Spec.Action = cairn.PolicyActionVerify }},
		{"a tag that is not key=value", func(q *service.PolicyRequest) { q.Spec.Target.Tag = "gold" }},
		{"a strategy", func(q *service.PolicyRequest) { q.Spec.Strategy = "logical" }},
	} {
		q := drill
		q.Name = "refused"
		tc.edit(&q)
		if _, err := r.svc.CreatePolicy(ctx, caller, q); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("a drill policy with %s: %v, want invalid", tc.name, err)
		}
	}

	// 10:30 verifies b1: its data and its overlay.
	verifiedBy(t, r, clock, ver.ID, b1)
	if len(r.eventsOf("dbbackup.verify.end")) != 1 {
		t.Fatalf("%d dbbackup.verify.end events", len(r.eventsOf("dbbackup.verify.end")))
	}

	// 10:45 drills b1; the service restarts while the host checks the
	// scratch instance, and the next service drills it again from the
	// start.
	gate := r.faults.Hold("InstanceHost.CheckInstance", false)
	slot := fireAt(t, r, clock, dr.ID)
	if slot.State != cairn.SlotFired || len(slot.Runs) != 1 || slot.Runs[0].BackupID != b1 {
		t.Fatalf("drill slot: %+v", slot)
	}
	<-gate.Reached()
	if list := must[[]cairn.Instance](t)(r.svc.ListInstances(ctx, caller, service.ListQuery{})); len(list) != 2 {
		t.Fatalf("during the drill, %d instances listed, want the source and the scratch one", len(list))
	}
	scratch := service.DrillInstanceID(r.lastTask(b1).ID)
	if err := r.svc.DeleteInstance(ctx, caller, scratch); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("deleting the drill's scratch instance: %v", err)
	}
	r.restart()
	r.done(b1)
	m := marksOf(t, r, b1)
	if m.Drill == nil || m.Drill.State != cairn.CheckPassed || m.Drill.Bytes == 0 ||
		!strings.Contains(m.Drill.Detail, "fake check of postgresql found no damage") || !strings.Contains(m.Drill.Detail, `returned "postgresql"`) {
		t.Fatalf("b1 after its drill: %+v", m.Drill)
	}
	noScratch(t, r, f.vol)

	// A drill whose query the check fails.
	bad := instanceCheckPolicy("drill-bad-query", cairn.PolicyActionDrill, "50", f.vol)
	bad.Spec.DrillQuery = "SELECT 'damaged'"
	badPolicy := must[cairn.Policy](t)(r.svc.CreatePolicy(ctx, caller, bad))
	clock.Set(clock.Now().Add(5 * time.Minute))
	must[int](t)(r.svc.FireDue(ctx))
	r.done(b1)
	if m := marksOf(t, r, b1); m.Drill == nil || m.Drill.State != cairn.CheckFailed || !strings.Contains(m.Drill.Detail, "fake check found damage") {
		t.Fatalf("b1 after a drill whose query fails: %+v", m.Drill)
	}
	noScratch(t, r, f.vol)
	if err := r.svc.DeletePolicy(ctx, caller, badPolicy.ID); err != nil {
		t.Fatal(err)
	}

	// b1's data is damaged at rest; a day on, the verification finds it
	// and the drill, restoring from the repository, fails loudly.
	b := r.dbBackup(b1)
	r.store(b.Container).Damage(must[cairn.ID](t)(cairn.ParseID(b.Data)))
	// (One policy is on at a time, so that one slot's firing does not
	// also catch the other's up.)
	off, on := false, true
	drill.Enabled = &off
	must[cairn.Policy](t)(r.svc.UpdatePolicy(ctx, caller, dr.ID, drill))
	clock.Set(clock.Now().Add(24 * time.Hour))
	if slot = fireAt(t, r, clock, ver.ID); len(slot.Runs) != 1 || slot.Runs[0].BackupID != b1 {
		t.Fatalf("the verify slot a day on: %+v", slot)
	}
	r.done(b1)
	if m := marksOf(t, r, b1); m.Verification == nil || m.Verification.State != cairn.CheckFailed ||
		!strings.Contains(m.Verification.Detail, "data corrupt-chunk") {
		t.Fatalf("b1, damaged, after its verification: %+v", m.Verification)
	}
	verify.Enabled, drill.Enabled = &off, &on
	must[cairn.Policy](t)(r.svc.UpdatePolicy(ctx, caller, ver.ID, verify))
	must[cairn.Policy](t)(r.svc.UpdatePolicy(ctx, caller, dr.ID, drill))
	fireAt(t, r, clock, dr.ID)
	r.done(b1)
	if m := marksOf(t, r, b1); m.Drill == nil || m.Drill.State != cairn.CheckFailed || !strings.Contains(m.Drill.Detail, "corrupt") {
		t.Fatalf("b1, damaged, after its drill: %+v", m.Drill)
	}
	for _, ev := range []string{"dbbackup.verify.error", "dbbackup.drill.error"} {
		if n := len(r.eventsOf(ev)); n == 0 {
			t.Fatalf("no %s event", ev)
		}
	}
	noScratch(t, r, f.vol)
	for _, p := range []string{ver.ID, dr.ID} {
		if err := r.svc.DeletePolicy(ctx, caller, p); err != nil {
			t.Fatal(err)
		}
	}
	r.settled()
}

// noScratch checks that only the instance named is left, on the host
// and in the catalog.
func noScratch(t *testing.T, r *rig, id string) {
	t.Helper()
	list := must[[]cairn.Instance](t)(r.svc.ListInstances(t.Context(), caller, service.ListQuery{}))
	host := must[[]string](t)(hostIDs(r))
	if len(list) != 1 || list[0].ID != id || !slices.Equal(host, []string{id}) {
		t.Fatalf("instances left: catalog %+v, host %v; want %s only", list, host, id)
	}
}

func hostIDs(r *rig) ([]string, error) {
	states, err := r.host.HostInstances(r.t.Context())
	var out []string
	for _, st := range states {
		out = append(out, st.ID)
	}
	return out, err
}
