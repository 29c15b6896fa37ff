package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/retention"
	"github.com/cairnproject/cairn/internal/schedule"
)

// Backup policies: a schedule that queues backups of named or tagged
// volumes and instances (or, for verify and drill policies, checks of
// their backups: checks.go), and retention rules that delete the
// backups a policy made once no rule keeps them (retention.go).
//
// A slot fires in two catalog transactions (the first shared with up to
// recordBatch-1 other policies' slots due at the same time, the second
// with up to fireBatch-1). The first
// re-reads the due policies, records each one's slot (policy_slots,
// unique per policy and slot) in state firing and moves the policy to
// its next slot; the second queues the slot's backups (the same rows and
// tasks a request makes) and marks it fired or skipped. So a slot fires
// once: two processes racing for it conflict, and the one that retries
// finds the policy moved on, or the slot queued; a process killed before
// the first commit leaves nothing, and the next one fires the slot
// (late, if the catch-up rule allows); one killed between the two leaves
// the slot firing, and the next one queues it. Recording first is what
// keeps slots on time when thousands fall due at one second: recording
// is two statements a policy, queuing a backup a dozen.

const (
	defaultFullEvery = 7
	// defaultScheduleGrace is how late a slot may fire and still count as
	// on time; later it is missed, and the catch-up rule decides.
	defaultScheduleGrace = 5 * time.Minute
	// defaultSchedulePoll bounds the scheduler's sleep, so it sees the
	// policies other processes sharing the catalog create.
	defaultSchedulePoll = time.Minute
	// missedRecordLimit bounds the missed slots recorded one by one in a
	// firing; older ones are counted in one event.
	missedRecordLimit = 1000
	maxPolicyTargets  = 1000
	// maxDrillQuery bounds a drill policy's query.
	maxDrillQuery = 4096
)

// PolicyRequest is a policy's definition as its owner sends it.
type PolicyRequest struct {
	Name string
	// Enabled nil: true on create, unchanged on update.
	Enabled *bool
	Spec    cairn.PolicySpec
}

// schedulerSet is the scheduler's settings and its loop's owner.
type schedulerSet struct {
	on    bool
	grace time.Duration
	poll  time.Duration
	// wake tells the loop a policy changed (capacity 1, never blocks).
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
}

// checkPolicy validates a definition in tx and fills its defaults; it
// returns the parsed schedule.
func (s *Service) checkPolicy(ctx context.Context, tx catalog.Tx, c Caller, name string, sp *cairn.PolicySpec) (schedule.Spec, error) {
	if name == "" {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "a policy needs a name")
	}
	if err := validText("name", name, 255); err != nil {
		return schedule.Spec{}, err
	}
	sched, err := schedule.Parse(sp.Schedule, sp.TimeZone)
	if err != nil {
		return schedule.Spec{}, err
	}
	if sp.TimeZone == "" {
		sp.TimeZone = "UTC"
	}
	if sp.JitterSeconds < 0 || sp.JitterSeconds > 86400 {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "jitter_seconds %d: want 0 to 86400", sp.JitterSeconds)
	}
	switch {
	case sp.FullEvery == 0:
		sp.FullEvery = defaultFullEvery
	case sp.FullEvery < 0:
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "full_every %d: want 1 or more (1: every backup full)", sp.FullEvery)
	}
	switch sp.CatchUp {
	case "":
		sp.CatchUp = cairn.CatchUpOnce
	case cairn.CatchUpOnce, cairn.CatchUpSkip:
	default:
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "catch_up %q: want once or skip", sp.CatchUp)
	}
	if err := retention.Validate(sp.Retention); err != nil {
		return schedule.Spec{}, err
	}
	switch sp.Action {
	case "":
		sp.Action = cairn.PolicyActionBackup
	case cairn.PolicyActionBackup, cairn.PolicyActionVerify, cairn.PolicyActionDrill:
	default:
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "action %q: want backup, verify or drill", sp.Action)
	}
	if sp.Action != cairn.PolicyActionBackup {
		if !retention.IsZero(sp.Retention) || sp.Container != "" || sp.Strategy != "" || sp.PITRWindowSeconds != 0 {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "retention, container, strategy and pitr_window_seconds are for backup policies")
		}
	}
	if sp.DrillQuery != "" || sp.DrillDatabase != "" {
		if sp.Action != cairn.PolicyActionDrill || sp.Target.Kind != cairn.TargetInstance {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "drill_query and drill_database are for drill policies of instances")
		}
		if sp.DrillQuery == "" {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "drill_database without a drill_query")
		}
		if err := validText("drill_query", sp.DrillQuery, maxDrillQuery); err != nil {
			return schedule.Spec{}, err
		}
		if sp.DrillDatabase != "" {
			if err := dbagent.ValidateDatabases([]dbagent.Database{{Name: sp.DrillDatabase}}, nil); err != nil {
				return schedule.Spec{}, fmt.Errorf("drill_database: %w", err)
			}
		}
	}
	if sp.VerifyShare < 0 || sp.VerifyShare > 1 || sp.ReverifyDays < 0 {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "verify_share %g: want 0 to 1 (0: all); reverify_days %d: want 0 or more", sp.VerifyShare, sp.ReverifyDays)
	}
	if (sp.VerifyShare != 0 || sp.ReverifyDays != 0) && sp.Action != cairn.PolicyActionVerify {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "verify_share and reverify_days are for verify policies")
	}
	switch sp.DrillPick {
	case "":
		if sp.Action == cairn.PolicyActionDrill {
			sp.DrillPick = cairn.DrillLatest
		}
	case cairn.DrillLatest, cairn.DrillRandom:
		if sp.Action != cairn.PolicyActionDrill {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "drill_pick is for drill policies")
		}
	default:
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "drill_pick %q: want latest or random", sp.DrillPick)
	}
	if sp.DrillWithinSeconds < 0 || sp.DrillWithinSeconds != 0 && sp.DrillPick != cairn.DrillRandom {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "drill_within_seconds is for drills that pick at random, and not negative")
	}
	if sp.PITRWindowSeconds < 0 {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "pitr_window_seconds %d: negative", sp.PITRWindowSeconds)
	}
	t := &sp.Target
	if len(t.IDs) == 0 && t.Tag == "" {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "a policy's target needs ids or a tag")
	}
	if len(t.IDs) > maxPolicyTargets {
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "target: %d ids; at most %d", len(t.IDs), maxPolicyTargets)
	}
	if t.Tag != "" {
		if k, _, ok := strings.Cut(t.Tag, "="); !ok || k == "" {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "target tag %q: want key=value", t.Tag)
		}
	}
	switch t.Kind {
	case cairn.TargetVolume:
		if sp.Strategy != "" || sp.PITRWindowSeconds != 0 {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "strategy and pitr_window_seconds are for instances")
		}
		if sp.Container != "" && !containerName.MatchString(sp.Container) {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "container %q: want 1 to 63 letters, digits, '.', '_' or '-'", sp.Container)
		}
		for _, id := range t.IDs {
			if _, err := getVolume(ctx, tx, c, id); err != nil {
				return schedule.Spec{}, fmt.Errorf("target: %w", err)
			}
		}
	case cairn.TargetInstance:
		if sp.Strategy != "" && !cairn.DatabaseStrategy(sp.Strategy).Valid() {
			return schedule.Spec{}, errorf(cairn.ErrInvalid, "strategy %q: want snapshot, physical or logical", sp.Strategy)
		}
		if err := validContainer(sp.Container); err != nil {
			return schedule.Spec{}, err
		}
		for _, id := range t.IDs {
			if _, err := getInstance(ctx, tx, c, id); err != nil {
				return schedule.Spec{}, fmt.Errorf("target: %w", err)
			}
		}
	default:
		return schedule.Spec{}, errorf(cairn.ErrInvalid, "target kind %q: want volume or instance", t.Kind)
	}
	return sched, nil
}

// plan sets p's next slot: the first after now.
func plan(p *cairn.Policy, sched schedule.Spec, now time.Time) {
	p.NextSlotAt = sched.Next(now).UTC()
	p.NextFireAt = p.NextSlotAt.Add(schedule.Jitter(p.ID, time.Duration(p.JitterSeconds)*time.Second))
}

// CreatePolicy stores a policy; its first slot is the schedule's first
// after now.
func (s *Service) CreatePolicy(ctx context.Context, c Caller, req PolicyRequest) (cairn.Policy, error) {
	now := s.nowUTC()
	p := cairn.Policy{ID: cairn.NewUUID(), ProjectID: c.ProjectID, Name: req.Name, Enabled: true,
		PolicySpec: req.Spec, CreatedAt: now, UpdatedAt: now}
	if req.Enabled != nil {
		p.Enabled = *req.Enabled
	}
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		sched, err := s.checkPolicy(ctx, tx, c, p.Name, &p.PolicySpec)
		if err != nil {
			return err
		}
		plan(&p, sched, now)
		return tx.InsertPolicy(ctx, p)
	})
	if err != nil {
		return cairn.Policy{}, err
	}
	s.wakeScheduler()
	s.event(ctx, "policy.create", p.ProjectID, policyPayload(p))
	return p, nil
}

// UpdatePolicy replaces a policy's definition. A changed schedule,
// zone or jitter, or enabling it, plans its next slot from now: the
// slots it had while disabled are not missed, they were not wanted.
func (s *Service) UpdatePolicy(ctx context.Context, c Caller, id string, req PolicyRequest) (cairn.Policy, error) {
	var p cairn.Policy
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if p, err = getPolicy(ctx, tx, c, id); err != nil {
			return err
		}
		old := p
		p.Name, p.PolicySpec = req.Name, req.Spec
		if req.Enabled != nil {
			p.Enabled = *req.Enabled
		}
		sched, err := s.checkPolicy(ctx, tx, c, p.Name, &p.PolicySpec)
		if err != nil {
			return err
		}
		now := s.nowUTC()
		if p.Enabled && (!old.Enabled || old.Schedule != p.Schedule || old.TimeZone != p.TimeZone || old.JitterSeconds != p.JitterSeconds) {
			plan(&p, sched, now)
		}
		p.UpdatedAt = now
		return tx.UpdatePolicy(ctx, p)
	})
	if err != nil {
		return cairn.Policy{}, err
	}
	s.wakeScheduler()
	s.event(ctx, "policy.update", p.ProjectID, policyPayload(p))
	return p, nil
}

// Policies lists the caller's project's policies (every project's for
// an admin asking for all).
func (s *Service) Policies(ctx context.Context, c Caller, all bool) ([]cairn.Policy, error) {
	project := c.ProjectID
	if all && c.Admin {
		project = ""
	}
	var out []cairn.Policy
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		out, err = tx.Policies(ctx, project)
		return err
	})
	return out, err
}

// Policy returns a policy the caller may see.
func (s *Service) Policy(ctx context.Context, c Caller, id string) (cairn.Policy, error) {
	var p cairn.Policy
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		p, err = getPolicy(ctx, tx, c, id)
		return err
	})
	return p, err
}

// DeletePolicy removes a policy and its slots; its backups stay.
func (s *Service) DeletePolicy(ctx context.Context, c Caller, id string) error {
	var p cairn.Policy
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if p, err = getPolicy(ctx, tx, c, id); err != nil {
			return err
		}
		return tx.DeletePolicy(ctx, id)
	})
	if err == nil {
		s.event(ctx, "policy.delete", p.ProjectID, policyPayload(p))
	}
	return err
}

// PolicySlots lists a policy's slots, newest first, at most limit.
func (s *Service) PolicySlots(ctx context.Context, c Caller, id string, limit int) ([]cairn.PolicySlot, error) {
	var out []cairn.PolicySlot
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		if _, err := getPolicy(ctx, tx, c, id); err != nil {
			return err
		}
		var err error
		out, err = tx.PolicySlots(ctx, id, limit)
		return err
	})
	return out, err
}

func getPolicy(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.Policy, error) {
	p, err := tx.Policy(ctx, id)
	if err == nil && !c.may(p.ProjectID) {
		return cairn.Policy{}, fmt.Errorf("policy %s: %w", id, cairn.ErrNotFound)
	}
	return p, err
}

func policyPayload(p cairn.Policy) map[string]any {
	return map[string]any{"policy_id": p.ID, "name": p.Name, "enabled": p.Enabled,
		"next_slot_at": p.NextSlotAt, "target": p.Target}
}

// FireDue fires every slot due at the service clock's now, and reports
// how many slots it recorded (firing or missed). It works in two
// passes, so that every due slot is recorded at its time however many
// backups its policies queue:
//
//  1. record: in catalog transactions of up to recordBatch due policies,
//     each policy's due slot is recorded firing (or missed, by the
//     catch-up rule) and the policy moved to its next slot;
//  2. queue: in transactions of up to fireBatch slots, each firing
//     slot's backups (or checks) are queued, and the slot becomes fired
//     or skipped, with its runs. This also queues the slots a process
//     that died between the passes left firing.
//
// A batch that fails runs again one policy (or slot) at a time; one
// whose failure persists is logged and left for the next call. Retention
// runs once every due slot is queued, for the policies that have rules.
func (s *Service) FireDue(ctx context.Context) (int, error) {
	n, _, err := s.fireDue(ctx)
	return n, err
}

// fireDue is FireDue; it also returns the policies whose slots could not
// be recorded.
func (s *Service) fireDue(ctx context.Context) (int, map[string]bool, error) {
	now := s.nowUTC()
	failed := map[string]bool{}
	total := 0
	var retain, fired []*cairn.Policy
	for {
		fs, more, err := s.recordDue(ctx, now, failed)
		if err != nil {
			return total, failed, err
		}
		if !more {
			break
		}
		for i := range fs {
			s.firedEvents(ctx, &fs[i]) // the missed slots
		}
		s.markNotified(ctx, fs)
		for i := range fs {
			f := &fs[i]
			total += len(f.slots) + f.firing
			// Pointers: a policy is a large value, and 10,000 copies
			// took a tenth of the record pass.
			fired = append(fired, &f.policy)
			if p := &f.policy; !retention.IsZero(p.Retention) || p.PITRWindowSeconds > 0 {
				retain = append(retain, p)
			}
		}
	}
	if err := s.queueFiring(ctx); err != nil {
		return total, failed, err
	}
	if err := s.pruneSlots(ctx, fired, now); err != nil {
		if ctx.Err() != nil {
			return total, failed, ctx.Err()
		}
		s.log.Error("pruning policies' old slots", "err", err)
	}
	// Retention removes the backups that were complete before these
	// slots; it runs after every slot is queued, off their clock.
	for _, p := range retain {
		if _, err := s.ApplyRetention(ctx, Caller{ProjectID: p.ProjectID}, p.ID, false); err != nil {
			if ctx.Err() != nil {
				return total, failed, ctx.Err()
			}
			s.log.Error("policy retention", "policy", p.ID, "err", err)
		}
	}
	return total, failed, nil
}

// recordDue records the due slots of the next batch of policies due at
// now and not in failed (pass 1), and returns what it recorded; more is
// false once no such policy is due. When the batch's transaction fails,
// each of its policies is recorded on its own, and one that fails again
// is added to failed and logged.
func (s *Service) recordDue(ctx context.Context, now time.Time, failed map[string]bool) (fs []firing, more bool, err error) {
	err = s.update(ctx, func(tx catalog.Tx) error {
		due, err := tx.DuePolicies(ctx, now, recordBatch+len(failed))
		if err != nil {
			return fmt.Errorf("due policies: %w", err)
		}
		var batch []cairn.Policy
		for _, p := range due {
			if !failed[p.ID] && len(batch) < recordBatch {
				batch = append(batch, p)
			}
		}
		fs, err = s.recordSlotsTx(ctx, tx, batch, now)
		return err
	})
	if err == nil || ctx.Err() != nil {
		return fs, len(fs) > 0, err
	}
	// One policy's failure must not hold the others: alone.
	var due []cairn.Policy
	if err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		due, err = tx.DuePolicies(ctx, now, recordBatch+len(failed))
		return err
	}); err != nil {
		return nil, false, fmt.Errorf("due policies: %w", err)
	}
	fs = nil
	tried := 0
	for _, p := range due {
		if failed[p.ID] || tried == recordBatch {
			continue
		}
		tried++
		var one []firing
		err := s.update(ctx, func(tx catalog.Tx) error {
			one = nil
			p, err := tx.Policy(ctx, p.ID)
			if errors.Is(err, cairn.ErrNotFound) {
				return nil // deleted meanwhile
			}
			if err != nil || !p.Enabled || p.NextFireAt.After(now) {
				return err // another process recorded it, or it changed
			}
			one, err = s.recordSlotsTx(ctx, tx, []cairn.Policy{p}, now)
			return err
		})
		switch {
		case ctx.Err() != nil:
			return nil, false, ctx.Err()
		case err != nil:
			failed[p.ID] = true
			s.log.Error("policy slot not recorded", "policy", p.ID, "err", err)
		default:
			fs = append(fs, one...)
		}
	}
	// Those that failed are in failed now: the next call reads past them.
	return fs, tried > 0, nil
}

// recordSlotsTx records the slots of policies ps due at now in tx (pass
// 1), in one statement for every few hundred slots and one for every
// few hundred policies: on a PostgreSQL catalog, two statements for each
// policy (each a round trip) made 10,000 due at once 1.6 s late; on
// SQLite it makes no measurable difference.
func (s *Service) recordSlotsTx(ctx context.Context, tx catalog.Tx, ps []cairn.Policy, now time.Time) ([]firing, error) {
	fs := make([]firing, 0, len(ps))
	slots := make([]cairn.PolicySlot, 0, len(ps))
	moved := make([]cairn.Policy, 0, len(ps))
	// Policies share schedules and zones, and parsing one loads its zone
	// from the system's database: each is parsed once a batch.
	type key struct{ expr, zone string }
	specs := map[key]schedule.Spec{}
	for _, p := range ps {
		k := key{p.Schedule, p.TimeZone}
		sched, ok := specs[k]
		if !ok {
			var err error
			if sched, err = schedule.Parse(p.Schedule, p.TimeZone); err != nil {
				return nil, fmt.Errorf("policy %s: %w", p.ID, err)
			}
			specs[k] = sched
		}
		f, due, next := s.planSlots(p, sched, now)
		fs = append(fs, f)
		slots = append(slots, due...)
		moved = append(moved, next)
	}
	if err := tx.InsertPolicySlots(ctx, slots...); err != nil {
		return nil, err
	}
	return fs, tx.AdvancePolicies(ctx, moved...)
}

// planSlots works out what recording policy p's slots due at now
// writes, p's schedule being sched: the latest due slot is recorded
// firing when it is on time (within the grace) or the catch-up rule is
// once, and every other due slot missed; the policy moves to its next
// slot. A slot records when it was fired: the service clock's now when
// planned.
func (s *Service) planSlots(p cairn.Policy, sched schedule.Spec, now time.Time) (f firing, due []cairn.PolicySlot, next cairn.Policy) {
	f = firing{policy: p}
	at := s.nowUTC()
	if at.Before(now) {
		at = now
	}
	jitter := p.NextFireAt.Sub(p.NextSlotAt)
	// The due slots: the planned one and every later one whose fire
	// time has come. Only the newest missedRecordLimit+1 are kept.
	times := []time.Time{p.NextSlotAt}
	after := sched.Next(p.NextSlotAt)
	for !after.IsZero() && !after.Add(jitter).After(now) {
		times = append(times, after.UTC())
		if len(times) > missedRecordLimit+1 {
			if f.older == 0 {
				f.oldest = times[0]
			}
			f.older++
			f.newest = times[0]
			times = times[1:]
		}
		after = sched.Next(after)
	}
	last := times[len(times)-1]
	if f.older > 0 {
		// One record stands for the slots too many to record one by
		// one, at the newest of them, so that they too have their
		// event from the outbox.
		st := cairn.PolicySlot{PolicyID: p.ID, SlotAt: f.newest, State: cairn.SlotMissed, FiredAt: at,
			Detail: fmt.Sprintf("no service ran at the %d slots from %s to this one; too many to record one by one",
				f.older, f.oldest.UTC().Format(time.RFC3339))}
		due = append(due, st)
		f.slots = append(f.slots, st)
	}
	for _, slot := range times[:len(times)-1] {
		st := cairn.PolicySlot{PolicyID: p.ID, SlotAt: slot, State: cairn.SlotMissed, FiredAt: at,
			Detail: "no service fired it in time; a later slot was due when one ran"}
		due = append(due, st)
		f.slots = append(f.slots, st)
	}
	late := now.Sub(last.Add(jitter)) > s.sched.grace
	st := cairn.PolicySlot{PolicyID: p.ID, SlotAt: last, State: cairn.SlotFiring, FiredAt: at, Late: late}
	if late && p.CatchUp == cairn.CatchUpSkip {
		st.State, st.Detail = cairn.SlotMissed, "no service fired it in time, and the policy's catch-up is skip"
		f.slots = append(f.slots, st)
	} else {
		f.firing++
	}
	due = append(due, st)
	if after.IsZero() {
		p.Enabled = false // the schedule ends (never, in practice)
	}
	p.NextSlotAt, p.NextFireAt = after.UTC(), after.Add(jitter).UTC()
	p.UpdatedAt = at
	return f, due, p
}

// queueFiring queues the backups of every slot recorded firing (pass 2),
// in transactions of up to fireBatch slots, and sends each one's events
// once its transaction committed. When a batch fails, its slots are
// queued one at a time; a slot that fails alone is logged and left
// firing, for the next call.
func (s *Service) queueFiring(ctx context.Context) error {
	failed := map[string]bool{} // policy and slot
	key := func(st cairn.PolicySlot) string { return st.PolicyID + " " + st.SlotAt.Format(time.RFC3339Nano) }
	firingSlots := func(tx catalog.Tx) ([]cairn.PolicySlot, error) {
		list, err := tx.FiringPolicySlots(ctx, fireBatch+len(failed))
		if err != nil {
			return nil, fmt.Errorf("firing slots: %w", err)
		}
		list = slices.DeleteFunc(list, func(st cairn.PolicySlot) bool { return failed[key(st)] })
		return list[:min(len(list), fireBatch)], nil
	}
	for {
		fs, n, err := s.queueSlots(ctx, firingSlots)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			var batch []cairn.PolicySlot
			if err := s.cat.View(ctx, func(tx catalog.Tx) error {
				var err error
				batch, err = firingSlots(tx)
				return err
			}); err != nil {
				return err
			}
			fs, n = nil, len(batch)
			for _, st := range batch {
				one, _, err := s.queueSlots(ctx, func(tx catalog.Tx) ([]cairn.PolicySlot, error) {
					list, err := tx.PolicySlots(ctx, st.PolicyID, 0)
					list = slices.DeleteFunc(list, func(x cairn.PolicySlot) bool { return !x.SlotAt.Equal(st.SlotAt) || x.State != cairn.SlotFiring })
					return list, err
				})
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					failed[key(st)] = true
					s.log.Error("policy slot's backups not queued", "policy", st.PolicyID, "slot", st.SlotAt, "err", err)
					continue
				}
				fs = append(fs, one...)
			}
		}
		for i := range fs {
			s.firedEvents(ctx, &fs[i])
		}
		s.markNotified(ctx, fs)
		if n == 0 {
			return nil
		}
	}
}

// queueSlots queues, in one transaction, the backups of the firing slots
// list reads in it, and returns what each queued and how many slots list
// gave.
func (s *Service) queueSlots(ctx context.Context, list func(catalog.Tx) ([]cairn.PolicySlot, error)) ([]firing, int, error) {
	skips := map[string]string{} // policy and target: why no backup of it is queued
	var fs []firing
	var n int
	for {
		err := s.update(ctx, func(tx catalog.Tx) error {
			fs = fs[:0]
			slots, err := list(tx)
			if err != nil {
				return err
			}
			n = len(slots)
			for _, st := range slots {
				p, err := tx.Policy(ctx, st.PolicyID)
				if err != nil {
					return err // a policy's deletion takes its slots
				}
				f := firing{policy: p}
				if err := s.fireSlotTx(ctx, tx, p, &st, skips, &f); err != nil {
					return err
				}
				if err := tx.UpdatePolicySlot(ctx, st); err != nil {
					return err
				}
				f.slots = append(f.slots, st)
				fs = append(fs, f)
			}
			return nil
		})
		if errors.Is(err, errSkipTarget) {
			continue // skips has a new entry: fewer targets each time
		}
		return fs, n, err
	}
}

// A policy's slot records are kept for slotHistory, and at least its
// newest slotKeep (or full_every, when more: firing reads that many
// back to choose full or incremental). A record makes its slot fire once
// only until the policy has moved past the slot, in the slot's own
// transaction; after that it is history for `policy slots`, and without
// a bound an hourly policy would add 8,760 rows a year.
const (
	slotHistory = 90 * 24 * time.Hour
	slotKeep    = 100
)

// pruneSlots deletes the fired policies' slot records past the history
// kept, off the slots' clock (after every due slot is recorded), in
// batches of fireBatch policies per transaction.
func (s *Service) pruneSlots(ctx context.Context, fired []*cairn.Policy, now time.Time) error {
	for start := 0; start < len(fired); start += fireBatch {
		batch := fired[start:min(start+fireBatch, len(fired))]
		err := s.cat.Update(ctx, func(tx catalog.Tx) error {
			for _, p := range batch {
				if _, err := tx.PrunePolicySlots(ctx, p.ID, now.Add(-slotHistory), max(slotKeep, p.FullEvery)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Batches: how many due policies one transaction records slots for (two
// statements each, so a large batch holds the catalog briefly and saves
// commits: 10,000 policies due at once take 10), and how many slots one
// transaction queues the backups of (a dozen statements each).
const (
	recordBatch = 2500
	fireBatch   = 256
)

// errSkipTarget makes queueSlots run its transaction again without a
// target whose backup could not be queued.
var errSkipTarget = errors.New("skip target")

// firing is what one policy's firing recorded, for its events.
type firing struct {
	policy  cairn.Policy
	slots   []cairn.PolicySlot
	backups []cairn.Backup
	dbs     []cairn.DatabaseBackup
	// firing: slots recorded firing, whose backups are queued next
	firing int
	// missed slots too many to record one by one: how many, and the
	// range (one record stands for them)
	older          int
	oldest, newest time.Time
}

// fireSlotTx queues the backups of st's slot for p's targets and fills
// st. A target whose backup cannot be queued (busy, in a state that
// cannot be backed up, over quota) is added to skips and errSkipTarget
// returned: the caller runs the transaction again, which rolls back what
// queuing it wrote.
func (s *Service) fireSlotTx(ctx context.Context, tx catalog.Tx, p cairn.Policy, st *cairn.PolicySlot, skips map[string]string, f *firing) error {
	c := Caller{ProjectID: p.ProjectID, UserID: "policy-" + p.ID}
	targets, err := policyTargets(ctx, tx, p)
	if err != nil {
		return err
	}
	name := p.Name + " " + st.SlotAt.Format(time.RFC3339)
	if len(name) > 255 {
		name = name[len(name)-255:]
	}
	// The slots before this one (itself is recorded already).
	history, err := tx.PolicySlots(ctx, p.ID, p.FullEvery+1)
	if err != nil {
		return err
	}
	history = slices.DeleteFunc(history, func(x cairn.PolicySlot) bool { return !x.SlotAt.Before(st.SlotAt) })
	for _, target := range targets {
		run := cairn.PolicyRun{TargetID: target}
		if why, ok := skips[p.ID+" "+target]; ok {
			run.Skipped = why
			st.Runs = append(st.Runs, run)
			continue
		}
		var err error
		switch {
		case p.Action == cairn.PolicyActionVerify || p.Action == cairn.PolicyActionDrill:
			runs, err := s.queuePolicyChecks(ctx, tx, p, target, st.SlotAt)
			if err != nil {
				return err
			}
			st.Runs = append(st.Runs, runs...)
			continue
		case p.Target.Kind == cairn.TargetVolume:
			run.Full = wantFull(history, target, p.FullEvery)
			err = s.queuePolicyVolumeBackup(ctx, tx, c, p, target, name, &run, f)
		default:
			run.Full = wantFull(history, target, p.FullEvery)
			err = s.queuePolicyInstanceBackup(ctx, tx, c, p, target, name, &run, f)
		}
		if err != nil {
			if !isRequestError(err) {
				return err
			}
			skips[p.ID+" "+target] = failReason(err)
			return errSkipTarget
		}
		if err := tx.InsertPolicyBackup(ctx, cairn.PolicyBackup{PolicyID: p.ID, BackupID: run.BackupID, TargetID: target, SlotAt: st.SlotAt}); err != nil {
			return err
		}
		st.Runs = append(st.Runs, run)
	}
	switch {
	case len(targets) == 0:
		st.State, st.Detail = cairn.SlotSkipped, "no target: no volume or instance matches the policy"
	case slices.ContainsFunc(st.Runs, func(r cairn.PolicyRun) bool { return r.BackupID != "" && r.Skipped == "" }):
		st.State = cairn.SlotFired
	case p.Action != cairn.PolicyActionBackup:
		st.State, st.Detail = cairn.SlotSkipped, "no backup to "+p.Action
	default:
		st.State, st.Detail = cairn.SlotSkipped, "no target could be backed up"
	}
	return nil
}

// queuePolicyChecks queues a verify slot's verifications of a target's
// backups (those never verified, or last verified longer ago than the
// policy's reverify_days, or that failed), or a drill slot's drill of
// one of them: a volume's available backups, an instance's completed
// ones. A backup whose check is under way is a skipped run.
func (s *Service) queuePolicyChecks(ctx context.Context, tx catalog.Tx, p cairn.Policy, target string, slot time.Time) ([]cairn.PolicyRun, error) {
	byTime := []catalog.SortKey{{Key: "data_timestamp", Desc: true}}
	var list []checkTarget
	kind := "backup."
	if p.Target.Kind == cairn.TargetVolume {
		backups, err := tx.Backups(ctx, catalog.Filter{ProjectID: p.ProjectID, VolumeID: target, Status: cairn.StatusAvailable, Sort: byTime})
		if err != nil {
			return nil, err
		}
		for _, b := range backups {
			list = append(list, checkTarget{id: b.ID, project: b.ProjectID, at: b.DataTimestamp})
		}
	} else {
		kind = "dbbackup."
		backups, err := tx.DatabaseBackups(ctx, catalog.Filter{ProjectID: p.ProjectID, InstanceID: target,
			Status: cairn.Status(cairn.DatabaseBackupCompleted), Sort: byTime})
		if err != nil {
			return nil, err
		}
		for _, b := range backups {
			list = append(list, checkTarget{id: b.ID, project: b.ProjectID, at: b.DataTimestamp})
		}
	}
	var picked []checkTarget
	params := checkParams{Share: p.VerifyShare}
	if p.Action == cairn.PolicyActionDrill {
		kind += "drill"
		params = checkParams{Query: p.DrillQuery, Database: p.DrillDatabase}
		// The pick is the slot's: the same slot picks the same backup.
		rng := rand.New(rand.NewPCG(uint64(slot.Unix()), uint64(len(p.ID))))
		if b, ok := pickDrill(list, p, slot, rng); ok {
			picked = append(picked, b)
		}
	} else {
		kind += "verify"
		for _, b := range list {
			m, err := tx.BackupMarks(ctx, b.id)
			if err != nil {
				return nil, err
			}
			v := m.Verification
			if v == nil || v.State != cairn.CheckPassed ||
				p.ReverifyDays > 0 && slot.Sub(v.At) >= time.Duration(p.ReverifyDays)*24*time.Hour {
				picked = append(picked, b)
			}
		}
	}
	var runs []cairn.PolicyRun
	for _, b := range picked {
		run := cairn.PolicyRun{TargetID: target, BackupID: b.id}
		err := s.queueCheck(ctx, tx, kind, b, params)
		if errors.Is(err, cairn.ErrConflict) {
			run.Skipped = failReason(err)
		} else if err != nil {
			return nil, err
		}
		runs = append(runs, run)
	}
	return runs, nil
}

// isRequestError reports an error a request would answer with 4xx: the
// target, not the catalog, is why its backup cannot be queued.
func isRequestError(err error) bool {
	for _, e := range []error{cairn.ErrConflict, cairn.ErrInvalid, cairn.ErrQuota, cairn.ErrNotFound, cairn.ErrUnsupported} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// wantFull: a target's first backup by the policy is full, and then
// every fullEvery-th.
func wantFull(history []cairn.PolicySlot, target string, fullEvery int) bool {
	incrementals := 0
	for _, sl := range history { // newest first
		for _, r := range sl.Runs {
			if r.TargetID != target || r.BackupID == "" {
				continue
			}
			if r.Full {
				return incrementals+1 >= fullEvery
			}
			incrementals++
		}
	}
	return true
}

// policyTargets resolves p's targets now: the named ones, then those
// carrying the tag, in order, each once. A named target deleted since is
// left out.
func policyTargets(ctx context.Context, tx catalog.Tx, p cairn.Policy) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, id := range p.Target.IDs {
		var project string
		var err error
		if p.Target.Kind == cairn.TargetVolume {
			var v cairn.Volume
			v, err = tx.Volume(ctx, id)
			project = v.ProjectID
			if err == nil && v.Status == cairn.StatusDeleting {
				continue
			}
		} else {
			var in cairn.Instance
			in, err = tx.Instance(ctx, id)
			project = in.ProjectID
		}
		if errors.Is(err, cairn.ErrNotFound) || err == nil && project != p.ProjectID {
			continue
		}
		if err != nil {
			return nil, err
		}
		add(id)
	}
	k, v, ok := strings.Cut(p.Target.Tag, "=")
	switch {
	case !ok:
	case p.Target.Kind == cairn.TargetVolume:
		vols, err := tx.Volumes(ctx, catalog.Filter{ProjectID: p.ProjectID, Sort: []catalog.SortKey{{Key: "created_at"}}})
		if err != nil {
			return nil, err
		}
		for _, vol := range vols {
			if got, has := vol.Metadata[k]; has && got == v && vol.Status != cairn.StatusDeleting {
				add(vol.ID)
			}
		}
	default:
		// An instance being built, deleted or used by a drill is not
		// one to back up or check; one in another state is a target,
		// and queuing its backup says why it cannot be (a skipped run).
		list, err := tx.Instances(ctx, catalog.Filter{ProjectID: p.ProjectID, Sort: []catalog.SortKey{{Key: "created_at"}}})
		if err != nil {
			return nil, err
		}
		for _, in := range list {
			if got, has := in.Metadata[k]; has && got == v && in.Status != cairn.InstanceBuild && in.Status != cairn.InstanceShutdown {
				add(in.ID)
			}
		}
	}
	return out, nil
}

// queuePolicyVolumeBackup queues a volume's backup for a slot: full,
// or incremental when run.Full is false and the volume has a backup in
// the container to build on. An in-use volume is backed up through a
// snapshot, as a forced request is.
func (s *Service) queuePolicyVolumeBackup(ctx context.Context, tx catalog.Tx, c Caller, p cairn.Policy, id, name string, run *cairn.PolicyRun, f *firing) error {
	running, err := tx.Backups(ctx, catalog.Filter{VolumeID: id, Status: cairn.StatusCreating, Limit: 1})
	if err != nil {
		return err
	}
	if len(running) > 0 {
		return fmt.Errorf("volume %s: backup %s of it is still running: %w", id, running[0].ID, cairn.ErrConflict)
	}
	req := BackupCreate{VolumeID: id, Name: name, Container: p.Container, Force: true,
		Description: "policy " + p.Name + " (" + p.ID + ")"}
	if req.Container == "" {
		req.Container = s.defCont
	}
	if !run.Full {
		_, err := latestBefore(ctx, tx, cairn.Backup{ProjectID: p.ProjectID, VolumeID: id, Container: req.Container, DataTimestamp: s.nowUTC()})
		run.Full = errors.Is(err, cairn.ErrInvalid) // nothing to build on
		if err != nil && !run.Full {
			return err
		}
	}
	req.Incremental = !run.Full
	b, err := s.createBackupTx(ctx, tx, c, req)
	if err != nil {
		return err
	}
	run.BackupID = b.ID
	f.backups = append(f.backups, b)
	return nil
}

// queuePolicyInstanceBackup queues an instance's backup for a slot,
// with the policy's strategy or the instance's own.
func (s *Service) queuePolicyInstanceBackup(ctx context.Context, tx catalog.Tx, c Caller, p cairn.Policy, id, name string, run *cairn.PolicyRun, f *firing) error {
	if s.host == nil {
		return errNoInstances
	}
	in, err := tx.Instance(ctx, id)
	if err != nil {
		return err
	}
	if in.Status == cairn.InstanceBackup {
		return fmt.Errorf("instance %s: a backup of it is still running: %w", id, cairn.ErrConflict)
	}
	b, err := s.createDatabaseBackupTx(ctx, tx, c, cairn.DatabaseBackupCreate{InstanceID: id, Name: name,
		Description: "policy " + p.Name + " (" + p.ID + ")", Strategy: cairn.DatabaseStrategy(p.Strategy),
		Container: p.Container, Incremental: !run.Full})
	if err != nil {
		return err
	}
	run.BackupID, run.Full = b.ID, b.ParentID == ""
	f.dbs = append(f.dbs, b)
	return nil
}

// firedEvents sends a firing's events once its transaction committed:
// each backup's start, then its slots' events (slotEvents); the caller
// then marks them sent (markNotified). A process killed before the mark
// leaves the slots unnotified, and the next scheduler sends their events
// (SendSlotEvents).
func (s *Service) firedEvents(ctx context.Context, f *firing) {
	for _, b := range f.backups {
		s.event(ctx, "backup.create.start", b.ProjectID, backupPayload(b))
	}
	for _, b := range f.dbs {
		s.event(ctx, "dbbackup.create.start", b.ProjectID, dbBackupPayload(b))
	}
	for _, st := range f.slots {
		s.slotEvents(ctx, f.policy, st)
	}
}

// markNotified marks the slots of firings whose events were sent, in
// one transaction (a transaction a slot doubled the time 10,000 slots
// took to queue). On failure they stay unnotified: the next scheduler
// sends their events again, with the same delivery IDs.
func (s *Service) markNotified(ctx context.Context, fs []firing) {
	var slots []cairn.PolicySlot
	for i := range fs {
		slots = append(slots, fs[i].slots...)
	}
	if len(slots) == 0 {
		return
	}
	if err := s.update(ctx, func(tx catalog.Tx) error { return tx.MarkPolicySlotsNotified(ctx, slots...) }); err != nil {
		s.log.Error("policy slots' events not marked sent", "slots", len(slots), "err", err)
	}
}

// slotEvents sends a slot's events: schedule.fired for a slot that
// queued backups, and schedule.missed for a slot missed or skipped and
// for every target left out of a fired slot. Each event's delivery ID
// is derived from the slot, so a receiver can tell an event sent again
// (after a crash) from a new one.
func (s *Service) slotEvents(ctx context.Context, p cairn.Policy, st cairn.PolicySlot) {
	payload := map[string]any{"policy_id": p.ID, "name": p.Name, "slot_at": st.SlotAt, "state": st.State,
		"late": st.Late, "detail": st.Detail, "runs": st.Runs}
	typ := "schedule.missed"
	if st.State == cairn.SlotFired {
		typ = "schedule.fired"
	}
	s.notify.Notify(ctx, notify.Event{ID: SlotEventID(p.ID, st.SlotAt, typ, ""), Type: typ, ProjectID: p.ProjectID, Payload: payload})
	for _, r := range st.Runs {
		if r.Skipped != "" && st.State == cairn.SlotFired {
			s.notify.Notify(ctx, notify.Event{ID: SlotEventID(p.ID, st.SlotAt, "schedule.missed", r.TargetID),
				Type: "schedule.missed", ProjectID: p.ProjectID, Payload: map[string]any{"policy_id": p.ID, "name": p.Name,
					"slot_at": st.SlotAt, "state": cairn.SlotSkipped, "target_id": r.TargetID, "detail": r.Skipped}})
		}
	}
}

// SlotEventID is the delivery ID (a UUID, as notify.Event.ID) of the
// event of type typ about policyID's slot at slotAt, and one of its
// targets (target, or "" for the slot's own event): the same every
// time the event is sent.
func SlotEventID(policyID string, slotAt time.Time, typ, target string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{"cairn slot event", policyID, slotAt.UTC().Format(time.RFC3339Nano), typ, target}, "\x00")))
	h[6] = h[6]&0x0f | 0x80 // version 8: custom
	h[8] = h[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// SendSlotEvents sends the events of every slot left unnotified, and
// marks them sent: the slots a process recorded or queued, and then died
// (kill -9, a lost machine) before it sent their events. It returns how
// many slots it sent events for. RunScheduler calls it when it starts.
// At least once: a slot another process is sending at the same moment
// may be sent twice, with the same delivery IDs.
func (s *Service) SendSlotEvents(ctx context.Context) (int, error) {
	total := 0
	for {
		var list []cairn.PolicySlot
		policies := map[string]cairn.Policy{}
		err := s.cat.View(ctx, func(tx catalog.Tx) error {
			var err error
			if list, err = tx.UnnotifiedPolicySlots(ctx, fireBatch); err != nil {
				return fmt.Errorf("unnotified slots: %w", err)
			}
			for _, st := range list {
				if _, ok := policies[st.PolicyID]; ok {
					continue
				}
				p, err := tx.Policy(ctx, st.PolicyID)
				if err != nil {
					return err // a policy's deletion takes its slots
				}
				policies[p.ID] = p
			}
			return nil
		})
		if err != nil || len(list) == 0 {
			return total, err
		}
		for _, st := range list {
			s.slotEvents(ctx, policies[st.PolicyID], st)
		}
		if err := s.update(ctx, func(tx catalog.Tx) error { return tx.MarkPolicySlotsNotified(ctx, list...) }); err != nil {
			return total, fmt.Errorf("marking slots' events sent: %w", err)
		}
		total += len(list)
	}
}

// wakeScheduler tells the loop that policies changed.
func (s *Service) wakeScheduler() {
	select {
	case s.sched.wake <- struct{}{}:
	default:
	}
}

// startScheduler runs the scheduler loop until Stop.
func (s *Service) startScheduler(ctx context.Context) {
	if !s.sched.on {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	s.sched.mu.Lock()
	s.sched.cancel, s.sched.done = cancel, make(chan struct{})
	done := s.sched.done
	s.sched.mu.Unlock()
	go func() {
		defer close(done)
		s.RunScheduler(ctx)
	}()
}

// stopScheduler stops the loop and waits for it; a firing under way
// either commits or rolls back.
func (s *Service) stopScheduler() {
	s.sched.mu.Lock()
	cancel, done := s.sched.cancel, s.sched.done
	s.sched.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// RunScheduler fires what is due, then sleeps until the next fire time,
// a policy change, or the poll interval, whichever comes first, until
// ctx ends. Start runs it when Config.Scheduler is set; a caller that
// runs it itself (a benchmark) owns it.
func (s *Service) RunScheduler(ctx context.Context) {
	if n, err := s.SendSlotEvents(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("scheduler: the events of slots left unnotified", "err", err)
	} else if n > 0 {
		s.log.Info("scheduler: sent the events of slots a process left unnotified", "slots", n)
	}
	for ctx.Err() == nil {
		_, failed, err := s.fireDue(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("scheduler", "err", err)
		}
		// Sleep until the next fire time of a policy that did not fail:
		// one that failed is tried again at the next wake, not at once
		// (it would spin).
		wait := s.sched.poll
		var next []cairn.Policy
		err = s.cat.View(ctx, func(tx catalog.Tx) error {
			var err error
			next, err = tx.DuePolicies(ctx, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), len(failed)+1)
			return err
		})
		for _, p := range next {
			if err == nil && !failed[p.ID] {
				wait = min(wait, max(p.NextFireAt.Sub(s.now()), 0))
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-s.sched.wake:
		case <-s.after(wait):
		}
	}
}
