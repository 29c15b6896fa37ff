package catalogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

func fullPolicy(project string, i int) cairn.Policy {
	return cairn.Policy{ID: cairn.NewUUID(), ProjectID: project, Name: "policy-" + string(rune('a'+i)), Enabled: i%2 == 0,
		PolicySpec: cairn.PolicySpec{
			Target:   cairn.PolicyTarget{Kind: cairn.TargetVolume, IDs: []string{"v1", "v2"}, Tag: "tier=gold"},
			Schedule: "0 * * * *", TimeZone: "Europe/Berlin", JitterSeconds: 30, FullEvery: 7, Container: "c",
			CatchUp: cairn.CatchUpOnce, PITRWindowSeconds: 3600,
			Retention: cairn.RetentionRules{Last: 3, Hourly: 24, Daily: 7, Weekly: 4, Monthly: 12, Yearly: 2, Within: "36h"}},
		NextSlotAt: at(10 + i), NextFireAt: at(20 + i), CreatedAt: at(i), UpdatedAt: at(i + 1)}
}

// testPolicies: insert and read back every field, names unique per
// project, list by project and all, due policies in order, update,
// delete with the slots, and a project's deletion taking its policies.
func testPolicies(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	a, b, c := fullPolicy(p[0], 0), fullPolicy(p[0], 2), fullPolicy(p[1], 4)
	b.NextFireAt, b.Enabled = at(5), false
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, x := range []cairn.Policy{a, b, c} {
			if err := tx.InsertPolicy(ctx, x); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.Policy(ctx, a.ID)
		wantErr(t, "get", err, nil)
		wantEqual(t, "get", got, a)
		same := fullPolicy(p[0], 0)
		wantErr(t, "a name taken in the project", tx.InsertPolicy(ctx, same), cairn.ErrExists)
		same.ProjectID = p[1]
		other := same
		wantErr(t, "the same name in another project", tx.InsertPolicy(ctx, other), nil)
		dup := fullPolicy(p[1], 9)
		dup.ID = a.ID
		wantErr(t, "an ID taken", tx.InsertPolicy(ctx, dup), cairn.ErrExists)
		wantErr(t, "a missing project", tx.InsertPolicy(ctx, fullPolicy("nope", 1)), cairn.ErrNotFound)
		_, err = tx.Policy(ctx, "nope")
		wantErr(t, "get a missing one", err, cairn.ErrNotFound)
		return tx.DeletePolicy(ctx, other.ID)
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		list, err := tx.Policies(ctx, p[0])
		wantErr(t, "list", err, nil)
		wantEqual(t, "list of a project", ids(list, func(x cairn.Policy) string { return x.ID }), []string{a.ID, b.ID})
		all, err := tx.Policies(ctx, "")
		wantErr(t, "list all", err, nil)
		wantEqual(t, "list of all", len(all), 3)
		due, err := tx.DuePolicies(ctx, at(24), 10)
		wantErr(t, "due", err, nil)
		// a and c are enabled; b is not. c's fire time is at(24).
		wantEqual(t, "due", ids(due, func(x cairn.Policy) string { return x.ID }), []string{a.ID, c.ID})
		due, _ = tx.DuePolicies(ctx, at(24), 1)
		wantEqual(t, "due, limited", ids(due, func(x cairn.Policy) string { return x.ID }), []string{a.ID})
		due, _ = tx.DuePolicies(ctx, at(19), 10)
		wantEqual(t, "nothing due yet", len(due), 0)
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		a.Name, a.Enabled, a.NextFireAt, a.Retention = "renamed", false, at(50), cairn.RetentionRules{Last: 1}
		wantErr(t, "update", tx.UpdatePolicy(ctx, a), nil)
		got, _ := tx.Policy(ctx, a.ID)
		wantEqual(t, "updated", got, a)
		taken := a
		taken.Name = b.Name
		wantErr(t, "rename to a taken name", tx.UpdatePolicy(ctx, taken), cairn.ErrExists)
		missing := fullPolicy(p[0], 7)
		wantErr(t, "update a missing one", tx.UpdatePolicy(ctx, missing), cairn.ErrNotFound)
		wantErr(t, "slot", tx.InsertPolicySlots(ctx, cairn.PolicySlot{PolicyID: a.ID, SlotAt: at(1), State: cairn.SlotFired, FiredAt: at(2)}), nil)
		pb := cairn.PolicyBackup{PolicyID: a.ID, BackupID: "b2", TargetID: "v1", SlotAt: at(7)}
		wantErr(t, "policy backup", tx.InsertPolicyBackup(ctx, pb), nil)
		wantErr(t, "older policy backup", tx.InsertPolicyBackup(ctx, cairn.PolicyBackup{PolicyID: a.ID, BackupID: "b1", TargetID: "v2", SlotAt: at(6)}), nil)
		wantErr(t, "policy backup again", tx.InsertPolicyBackup(ctx, pb), cairn.ErrExists)
		pbs, err := tx.PolicyBackups(ctx, a.ID)
		wantErr(t, "policy backups", err, nil)
		wantEqual(t, "policy backups, oldest first", ids(pbs, func(x cairn.PolicyBackup) string { return x.BackupID }), []string{"b1", "b2"})
		wantEqual(t, "policy backup", pbs[1], pb)
		wantErr(t, "forget a policy backup", tx.DeletePolicyBackup(ctx, a.ID, "b1"), nil)
		wantErr(t, "forget it again", tx.DeletePolicyBackup(ctx, a.ID, "b1"), cairn.ErrNotFound)
		wantErr(t, "delete", tx.DeletePolicy(ctx, a.ID), nil)
		pbs, _ = tx.PolicyBackups(ctx, a.ID)
		wantEqual(t, "policy backups of a deleted policy", len(pbs), 0)
		wantErr(t, "delete again", tx.DeletePolicy(ctx, a.ID), cairn.ErrNotFound)
		slots, err := tx.PolicySlots(ctx, a.ID, 0)
		wantErr(t, "slots of a deleted policy", err, nil)
		wantEqual(t, "slots of a deleted policy", len(slots), 0)
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "slot of c", tx.InsertPolicySlots(ctx, cairn.PolicySlot{PolicyID: c.ID, SlotAt: at(1), State: cairn.SlotFired, FiredAt: at(2)}), nil)
		wantErr(t, "delete a project with policies", tx.DeleteProject(ctx, p[1]), nil)
		_, err := tx.Policy(ctx, c.ID)
		wantErr(t, "its policy", err, cairn.ErrNotFound)
		slots, _ := tx.PolicySlots(ctx, c.ID, 0)
		wantEqual(t, "its slots", len(slots), 0)
		return nil
	})
}

// testPolicySlotOnce: slots read back newest first with every field;
// a second record of a slot is ErrExists without spoiling the
// transaction; and of 8 writers racing for each of 20 slots, exactly one
// records each.
func testPolicySlotOnce(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	pol := fullPolicy(p[0], 0)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertPolicy(ctx, pol) })
	first := cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(1), State: cairn.SlotFired, FiredAt: at(2), Late: true, Detail: "caught up",
		Runs: []cairn.PolicyRun{{TargetID: "v1", BackupID: "b1", Full: true}, {TargetID: "v2", Skipped: "busy"}}}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "slot", tx.InsertPolicySlots(ctx, first), nil)
		again := first
		again.State = cairn.SlotMissed
		wantErr(t, "the same slot again", tx.InsertPolicySlots(ctx, again), cairn.ErrExists)
		// The transaction goes on after the duplicate.
		return tx.InsertPolicySlots(ctx, cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(3), State: cairn.SlotMissed, FiredAt: at(4)})
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		slots, err := tx.PolicySlots(ctx, pol.ID, 0)
		wantErr(t, "slots", err, nil)
		wantEqual(t, "slots", len(slots), 2)
		wantEqual(t, "newest slot", slots[0].SlotAt, at(3))
		wantEqual(t, "first slot", slots[1], first)
		one, _ := tx.PolicySlots(ctx, pol.ID, 1)
		wantEqual(t, "limit", len(one), 1)
		return nil
	})
	var mu sync.Mutex
	won := map[time.Time]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 10; i < 30; i++ {
				slot := at(i)
				err := s.Update(t.Context(), func(tx catalog.Tx) error {
					return tx.InsertPolicySlots(t.Context(), cairn.PolicySlot{PolicyID: pol.ID, SlotAt: slot, State: cairn.SlotFired, FiredAt: slot})
				})
				switch {
				case err == nil:
					mu.Lock()
					won[slot]++
					mu.Unlock()
				case !errors.Is(err, cairn.ErrExists):
					t.Errorf("slot %s: %v", slot, err)
				}
			}
		}()
	}
	wg.Wait()
	for i := 10; i < 30; i++ {
		if won[at(i)] != 1 {
			t.Errorf("slot %d recorded %d times", i, won[at(i)])
		}
	}
}

// testPrunePolicySlots: a prune deletes the slots before its time but
// for the newest keep, and no other policy's.
func testPrunePolicySlots(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	a, b := fullPolicy(p[0], 0), fullPolicy(p[0], 1)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, pol := range []cairn.Policy{a, b} {
			if err := tx.InsertPolicy(ctx, pol); err != nil {
				return err
			}
			for i := range 10 {
				if err := tx.InsertPolicySlots(ctx, cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(i), State: cairn.SlotFired, FiredAt: at(i)}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for _, tc := range []struct {
		name   string
		before time.Time
		keep   int
		pruned int
		oldest time.Time
	}{
		{"before the first", at(0), 1, 0, at(0)},
		{"before the fourth", at(3), 1, 3, at(3)},
		{"all but the newest 8 (2 gone already)", at(9), 8, 0, at(3)},
		{"all but the newest 5", at(9), 5, 2, at(5)},
		{"more kept than there are", at(100), 50, 0, at(5)},
		{"all but the newest", at(100), 1, 4, at(9)},
	} {
		var n int
		update(t, s, func(ctx context.Context, tx catalog.Tx) error {
			var err error
			n, err = tx.PrunePolicySlots(ctx, a.ID, tc.before, tc.keep)
			return err
		})
		view(t, s, func(ctx context.Context, tx catalog.Tx) error {
			slots, err := tx.PolicySlots(ctx, a.ID, 0)
			wantErr(t, tc.name, err, nil)
			wantEqual(t, tc.name+": pruned", n, tc.pruned)
			wantEqual(t, tc.name+": oldest left", slots[len(slots)-1].SlotAt, tc.oldest)
			wantEqual(t, tc.name+": newest left", slots[0].SlotAt, at(9))
			return nil
		})
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		slots, err := tx.PolicySlots(ctx, b.ID, 0)
		wantErr(t, "the other policy's slots", err, nil)
		wantEqual(t, "the other policy's slots", len(slots), 10)
		_, err = tx.PrunePolicySlots(ctx, b.ID, at(100), 0)
		wantErr(t, "keep 0", err, cairn.ErrInvalid)
		return nil
	})
}

// testFiringPolicySlots: the slots in state firing, of every policy,
// are listed oldest first up to the limit; an update writes a slot's
// state, lateness, detail and runs (its fired time stays) and takes it
// off the list; a missing slot is ErrNotFound; a policy advanced writes
// only its schedule's fields.
func testFiringPolicySlots(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	a, b := fullPolicy(p[0], 0), fullPolicy(p[0], 1)
	firing := func(pol cairn.Policy, i int) cairn.PolicySlot {
		return cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(i), State: cairn.SlotFiring, FiredAt: at(i + 1)}
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, pol := range []cairn.Policy{a, b} {
			if err := tx.InsertPolicy(ctx, pol); err != nil {
				return err
			}
		}
		for _, sl := range []cairn.PolicySlot{firing(a, 5), firing(b, 3), firing(a, 7),
			{PolicyID: b.ID, SlotAt: at(1), State: cairn.SlotMissed, FiredAt: at(2)},
			{PolicyID: a.ID, SlotAt: at(2), State: cairn.SlotFired, FiredAt: at(2)}} {
			if err := tx.InsertPolicySlots(ctx, sl); err != nil {
				return err
			}
		}
		return nil
	})
	slotKeys := func(list []cairn.PolicySlot) []string {
		return ids(list, func(x cairn.PolicySlot) string {
			return fmt.Sprint(x.PolicyID == a.ID, x.SlotAt.Equal(at(3)), x.SlotAt.Unix())
		})
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.FiringPolicySlots(ctx, 10)
		wantErr(t, "firing slots", err, nil)
		wantEqual(t, "firing slots, oldest first", slotKeys(got), slotKeys([]cairn.PolicySlot{firing(b, 3), firing(a, 5), firing(a, 7)}))
		wantEqual(t, "a firing slot", got[1], firing(a, 5))
		got, _ = tx.FiringPolicySlots(ctx, 2)
		wantEqual(t, "firing slots, limited", len(got), 2)
		return nil
	})
	done := firing(a, 5)
	done.State, done.Late, done.Detail = cairn.SlotFired, true, "caught up"
	done.Runs = []cairn.PolicyRun{{TargetID: "v1", BackupID: "b1", Full: true}, {TargetID: "v2", Skipped: "busy"}}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "update a slot", tx.UpdatePolicySlot(ctx, done), nil)
		moved := done
		moved.FiredAt = at(40)
		wantErr(t, "update it again, another fired time", tx.UpdatePolicySlot(ctx, moved), nil)
		wantErr(t, "update a missing slot", tx.UpdatePolicySlot(ctx, firing(a, 6)), cairn.ErrNotFound)
		adv := a
		adv.Enabled, adv.NextSlotAt, adv.NextFireAt, adv.UpdatedAt = false, at(60), at(61), at(62)
		adv.Name, adv.Schedule = "not written", "1 2 3 4 5"
		wantErr(t, "advance", tx.AdvancePolicies(ctx, adv), nil)
		got, err := tx.Policy(ctx, a.ID)
		wantErr(t, "advanced", err, nil)
		want := a
		want.Enabled, want.NextSlotAt, want.NextFireAt, want.UpdatedAt = false, at(60), at(61), at(62)
		wantEqual(t, "advanced", got, want)
		wantErr(t, "advance a missing policy", tx.AdvancePolicies(ctx, fullPolicy(p[0], 5)), cairn.ErrNotFound)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, _ := tx.FiringPolicySlots(ctx, 10)
		wantEqual(t, "firing slots after one was queued", slotKeys(got), slotKeys([]cairn.PolicySlot{firing(b, 3), firing(a, 7)}))
		slots, _ := tx.PolicySlots(ctx, a.ID, 0)
		wantEqual(t, "the queued slot", slots[1], done)
		return nil
	})
}

// testUnnotifiedPolicySlots: every slot recorded is unnotified until
// marked; the list holds those not firing (a firing slot's events come
// once it is queued), oldest first, up to the limit, and a firing slot
// joins it when updated out of firing; marking takes slots off it, many
// at once (more than one statement's worth), and passes over slots
// without a record.
func testUnnotifiedPolicySlots(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	a, b := fullPolicy(p[0], 0), fullPolicy(p[0], 1)
	slot := func(pol cairn.Policy, i int, state string) cairn.PolicySlot {
		return cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(i), State: state, FiredAt: at(i + 1)}
	}
	key := func(x cairn.PolicySlot) string { return fmt.Sprint(x.PolicyID == a.ID, x.SlotAt.Unix()) }
	keys := func(list []cairn.PolicySlot) []string { return ids(list, key) }
	var many []cairn.PolicySlot
	for i := range 600 {
		many = append(many, slot(b, 1000+i, cairn.SlotMissed))
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, pol := range []cairn.Policy{a, b} {
			if err := tx.InsertPolicy(ctx, pol); err != nil {
				return err
			}
		}
		if err := tx.InsertPolicySlots(ctx, slot(a, 5, cairn.SlotFiring), slot(b, 3, cairn.SlotMissed), slot(a, 2, cairn.SlotFired),
			slot(a, 9, cairn.SlotSkipped)); err != nil {
			return err
		}
		return tx.InsertPolicySlots(ctx, many...)
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.UnnotifiedPolicySlots(ctx, 3)
		wantErr(t, "unnotified slots", err, nil)
		wantEqual(t, "unnotified slots, oldest first, not firing", keys(got),
			keys([]cairn.PolicySlot{slot(a, 2, cairn.SlotFired), slot(b, 3, cairn.SlotMissed), slot(a, 9, cairn.SlotSkipped)}))
		wantEqual(t, "an unnotified slot", got[1], slot(b, 3, cairn.SlotMissed))
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "mark", tx.MarkPolicySlotsNotified(ctx, slot(a, 2, ""), slot(b, 3, ""), slot(a, 77, "")), nil)
		wantErr(t, "mark many", tx.MarkPolicySlotsNotified(ctx, many...), nil)
		fired := slot(a, 5, cairn.SlotFired)
		return tx.UpdatePolicySlot(ctx, fired)
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.UnnotifiedPolicySlots(ctx, 1000)
		wantErr(t, "unnotified slots after marking", err, nil)
		wantEqual(t, "unnotified slots after marking", keys(got),
			keys([]cairn.PolicySlot{slot(a, 5, cairn.SlotFired), slot(a, 9, cairn.SlotSkipped)}))
		slots, _ := tx.PolicySlots(ctx, a.ID, 0)
		wantEqual(t, "slots of a, all kept", len(slots), 3)
		return nil
	})
}

// testPolicyBatches: slots and policies written many at once (more
// than one statement's worth, 300 policies and 600 slots) read back as
// written; one slot recorded already among many is ErrExists, and one
// missing policy among many ErrNotFound, and a transaction rolled back
// after either leaves nothing of its batch.
func testPolicyBatches(t *testing.T, s catalog.Store) {
	const n = 300
	p := addProjects(t, s, 1)
	pols := make([]cairn.Policy, n)
	var slots []cairn.PolicySlot
	for i := range pols {
		pols[i] = fullPolicy(p[0], 0)
		pols[i].Name = fmt.Sprint("batch-", i)
		for j := range 2 {
			slots = append(slots, cairn.PolicySlot{PolicyID: pols[i].ID, SlotAt: at(1000*j + i), State: cairn.SlotFiring,
				FiredAt: at(1000*j + i + 1), Late: j == 1, Detail: fmt.Sprint("slot ", j),
				Runs: []cairn.PolicyRun{{TargetID: fmt.Sprint("v", i), BackupID: fmt.Sprint("b", j)}}})
		}
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, pol := range pols {
			if err := tx.InsertPolicy(ctx, pol); err != nil {
				return err
			}
		}
		return nil
	})
	moved := make([]cairn.Policy, n)
	for i, pol := range pols {
		moved[i] = pol
		moved[i].Enabled = i%3 != 0
		moved[i].NextSlotAt, moved[i].NextFireAt, moved[i].UpdatedAt = at(5000+i), at(6000+i), at(7000+i)
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "insert 600 slots", tx.InsertPolicySlots(ctx, slots...), nil)
		wantErr(t, "advance 300 policies", tx.AdvancePolicies(ctx, moved...), nil)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i, pol := range moved {
			got, err := tx.Policy(ctx, pol.ID)
			wantErr(t, "advanced policy", err, nil)
			wantEqual(t, fmt.Sprint("advanced policy ", i), got, pol)
			sl, err := tx.PolicySlots(ctx, pol.ID, 0)
			wantErr(t, "slots", err, nil)
			wantEqual(t, fmt.Sprint("policy ", i, "'s slots"), sl, []cairn.PolicySlot{slots[2*i+1], slots[2*i]})
		}
		firing, err := tx.FiringPolicySlots(ctx, 1000)
		wantErr(t, "firing slots", err, nil)
		wantEqual(t, "firing slots", len(firing), len(slots))
		return nil
	})

	// One slot recorded already, and one missing policy, among many.
	boom := errors.New("rolled back")
	more := make([]cairn.PolicySlot, 0, n)
	for i, pol := range pols {
		more = append(more, cairn.PolicySlot{PolicyID: pol.ID, SlotAt: at(3000 + i), State: cairn.SlotMissed, FiredAt: at(3000 + i)})
	}
	again := append(slices.Clone(more[:150]), slots[7])
	again = append(again, more[150:]...)
	gone := append(slices.Clone(moved), fullPolicy(p[0], 1))
	for i := range gone {
		gone[i].NextSlotAt = at(9000 + i)
	}
	for _, tc := range []struct {
		what  string
		write func(ctx context.Context, tx catalog.Tx) error
		want  error
	}{
		{"301 slots, one recorded already", func(ctx context.Context, tx catalog.Tx) error {
			return tx.InsertPolicySlots(ctx, again...)
		}, cairn.ErrExists},
		{"301 policies, one missing", func(ctx context.Context, tx catalog.Tx) error {
			return tx.AdvancePolicies(ctx, gone...)
		}, cairn.ErrNotFound},
	} {
		err := s.Update(t.Context(), func(tx catalog.Tx) error {
			err := tc.write(t.Context(), tx)
			wantErr(t, tc.what, err, tc.want)
			return boom
		})
		wantErr(t, tc.what+": rolled back", err, boom)
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i, pol := range moved {
			got, _ := tx.Policy(ctx, pol.ID)
			wantEqual(t, fmt.Sprint("policy ", i, " after a rollback"), got, pol)
			sl, _ := tx.PolicySlots(ctx, pol.ID, 0)
			wantEqual(t, fmt.Sprint("policy ", i, "'s slots after a rollback"), len(sl), 2)
		}
		return nil
	})
}

// testBackupMarks: none read as the zero marks, written and read back,
// replaced, and gone with the backup (of a volume and of an instance)
// and with a project's deletion.
func testBackupMarks(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	b := fullBackup(p[0], 1)
	db := fullDatabaseBackup(p[0], 2)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		if err := tx.InsertBackup(ctx, b); err != nil {
			return err
		}
		return tx.InsertDatabaseBackup(ctx, db)
	})
	check := &cairn.BackupCheck{State: cairn.CheckFailed, At: at(3), Detail: "corrupt-chunk x", Chunks: 7, Bytes: 1 << 20, Seconds: 1.5}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		m, err := tx.BackupMarks(ctx, b.ID)
		wantErr(t, "marks of none", err, nil)
		wantEqual(t, "marks of none", m, cairn.BackupMarks{BackupID: b.ID})
		want := cairn.BackupMarks{BackupID: b.ID, Protected: true, Verification: check}
		wantErr(t, "put", tx.PutBackupMarks(ctx, want), nil)
		m, _ = tx.BackupMarks(ctx, b.ID)
		wantEqual(t, "marks", m, want)
		want.Protected, want.Drill = false, &cairn.BackupCheck{State: cairn.CheckPassed, At: at(4), Bytes: 9, Seconds: 0.25}
		wantErr(t, "replace", tx.PutBackupMarks(ctx, want), nil)
		m, _ = tx.BackupMarks(ctx, b.ID)
		wantEqual(t, "replaced", m, want)
		wantErr(t, "put of the instance's", tx.PutBackupMarks(ctx, cairn.BackupMarks{BackupID: db.ID, Protected: true}), nil)
		many := []string{"nope", b.ID, db.ID}
		for i := range 1200 { // more than one query's worth
			many = append(many, fmt.Sprint("none-", i))
		}
		of, err := tx.BackupMarksOf(ctx, many)
		wantErr(t, "marks of many", err, nil)
		wantEqual(t, "marks of many", of, map[string]cairn.BackupMarks{b.ID: want, db.ID: {BackupID: db.ID, Protected: true}})
		wantErr(t, "delete the backup", tx.DeleteBackup(ctx, b.ID), nil)
		wantErr(t, "delete the instance's", tx.DeleteDatabaseBackup(ctx, db.ID), nil)
		for _, id := range []string{b.ID, db.ID} {
			m, _ = tx.BackupMarks(ctx, id)
			wantEqual(t, "marks of a deleted backup", m, cairn.BackupMarks{BackupID: id})
		}
		// A backup inserted again under the ID starts without marks; so
		// does one whose project is deleted.
		wantErr(t, "again", tx.InsertBackup(ctx, b), nil)
		wantErr(t, "put", tx.PutBackupMarks(ctx, cairn.BackupMarks{BackupID: b.ID, Protected: true}), nil)
		b.Status = cairn.StatusDeleted
		wantErr(t, "mark it deleted", tx.UpdateBackup(ctx, b), nil)
		wantErr(t, "delete the project", tx.DeleteProject(ctx, p[0]), nil)
		m, _ = tx.BackupMarks(ctx, b.ID)
		wantEqual(t, "marks after the project's deletion", m, cairn.BackupMarks{BackupID: b.ID})
		return nil
	})
}
