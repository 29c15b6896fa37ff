package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// Backup policies and their slots: the policies and policy_slots tables
// (0013_policies.sql). A policy's definition is one JSON column; its
// statements are rebound per call, as volume types' are.

const policyCols = "id, project_id, name, enabled, spec, next_slot_at, next_fire_at, created_at, updated_at"

// jsonText stores v as JSON text, and reads it back.
type jsonText struct{ v any }

func (j jsonText) Scan(src any) error {
	var b []byte
	switch x := src.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		return fmt.Errorf("json column: unexpected %T", src)
	}
	return json.Unmarshal(b, j.v)
}

func jsonArg(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func policyDest(p *cairn.Policy) []any {
	return []any{&p.ID, &p.ProjectID, &p.Name, &p.Enabled, jsonText{&p.PolicySpec},
		timeDest{&p.NextSlotAt}, timeDest{&p.NextFireAt}, timeDest{&p.CreatedAt}, timeDest{&p.UpdatedAt}}
}

func (t *tx) policyArgs(p cairn.Policy) ([]any, error) {
	spec, err := jsonArg(p.PolicySpec)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p.ID, err)
	}
	return []any{p.ID, p.ProjectID, p.Name, p.Enabled, spec, t.d.Time(p.NextSlotAt), t.d.Time(p.NextFireAt),
		t.d.Time(p.CreatedAt), t.d.Time(p.UpdatedAt)}, nil
}

// InsertPolicy stores p: cairn.ErrExists when its ID, or its name in its
// project, is taken; cairn.ErrNotFound for a missing project.
func (t *tx) InsertPolicy(ctx context.Context, p cairn.Policy) error {
	if err := t.projectExists(ctx, p.ProjectID); err != nil {
		return fmt.Errorf("policy %s: %w", p.ID, err)
	}
	args, err := t.policyArgs(p)
	if err != nil {
		return err
	}
	n, err := t.execCount(ctx, t.d.rebind("INSERT INTO policies ("+policyCols+
		") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"), args...)
	if err != nil {
		return fmt.Errorf("insert policy %s: %w", p.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s (%q): the ID or the name is taken: %w", p.ID, p.Name, cairn.ErrExists)
	}
	return nil
}

// Policy reads policy id.
func (t *tx) Policy(ctx context.Context, id string) (cairn.Policy, error) {
	var p cairn.Policy
	err := t.scanRow(ctx, t.d.rebind("SELECT "+policyCols+" FROM policies WHERE id = ?"), []any{id}, policyDest(&p)...)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("policy %s: %w", id, cairn.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("policy %s: %w", id, err)
	}
	return p, nil
}

func (t *tx) policies(ctx context.Context, q string, args []any) ([]cairn.Policy, error) {
	out := []cairn.Policy{}
	err := t.all(ctx, "policies", t.d.rebind(q), args, func(r *sql.Rows) error {
		var p cairn.Policy
		if err := r.Scan(policyDest(&p)...); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// Policies lists project's policies (every project's for "") by name.
func (t *tx) Policies(ctx context.Context, project string) ([]cairn.Policy, error) {
	q, args := "SELECT "+policyCols+" FROM policies", []any(nil)
	if project != "" {
		q, args = q+" WHERE project_id = ?", []any{project}
	}
	return t.policies(ctx, q+" ORDER BY project_id, name, id", args)
}

// DuePolicies lists the enabled policies whose next slot fires at or
// before now, the earliest first, at most limit.
func (t *tx) DuePolicies(ctx context.Context, now time.Time, limit int) ([]cairn.Policy, error) {
	return t.policies(ctx, "SELECT "+policyCols+" FROM policies WHERE enabled = ? AND next_fire_at <= ? ORDER BY next_fire_at, id LIMIT ?",
		[]any{true, t.d.Time(now), limit})
}

// UpdatePolicy writes every field of the row with p's ID.
func (t *tx) UpdatePolicy(ctx context.Context, p cairn.Policy) error {
	args, err := t.policyArgs(p)
	if err != nil {
		return err
	}
	// A taken name is found before the update: a failed statement would
	// abort a PostgreSQL transaction.
	var other string
	err = t.scanRow(ctx, t.d.rebind("SELECT id FROM policies WHERE project_id = ? AND name = ? AND id <> ?"), []any{p.ProjectID, p.Name, p.ID}, &other)
	switch {
	case err == nil:
		return fmt.Errorf("policy %s: policy %s is named %q already: %w", p.ID, other, p.Name, cairn.ErrExists)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("policy %s: %w", p.ID, err)
	}
	n, err := t.execCount(ctx, t.d.rebind(`UPDATE policies SET project_id = ?, name = ?, enabled = ?, spec = ?,
		next_slot_at = ?, next_fire_at = ?, created_at = ?, updated_at = ? WHERE id = ?`), append(args[1:], p.ID)...)
	if t.d.Duplicate(err) {
		return fmt.Errorf("policy %s: the name %q is taken: %w", p.ID, p.Name, cairn.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("update policy %s: %w", p.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s: %w", p.ID, cairn.ErrNotFound)
	}
	return nil
}

// AdvancePolicies writes what firing changes in each policy's row
// (enabled, the next slot and fire times, updated_at) and nothing else,
// in statements of up to maxBatchRows rows: where UpdatePolicy also
// checks the name, the scheduler moves thousands of policies a second.
func (t *tx) AdvancePolicies(ctx context.Context, ps ...cairn.Policy) error {
	for _, chunk := range batches(ps) {
		// Typed values: PostgreSQL would read the untyped parameters of a
		// VALUES list as text. SQLite stores the casts' numbers as they are.
		rows := strings.Repeat(", (CAST(? AS TEXT), CAST(? AS BOOLEAN), CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ))", len(chunk))[2:]
		args := make([]any, 0, 5*len(chunk))
		for _, p := range chunk {
			args = append(args, p.ID, p.Enabled, t.d.Time(p.NextSlotAt), t.d.Time(p.NextFireAt), t.d.Time(p.UpdatedAt))
		}
		n, err := t.execCount(ctx, t.d.rebind(`UPDATE policies SET enabled = v.column2, next_slot_at = v.column3,
		next_fire_at = v.column4, updated_at = v.column5 FROM (VALUES `+rows+`) AS v WHERE policies.id = v.column1`), args...)
		if err != nil {
			return fmt.Errorf("advance %d policies from %s: %w", len(chunk), chunk[0].ID, err)
		}
		if int(n) != len(chunk) {
			return fmt.Errorf("advance %d policies from %s: %d of them: %w", len(chunk), chunk[0].ID, len(chunk)-int(n), cairn.ErrNotFound)
		}
	}
	return nil
}

// maxBatchRows bounds the rows of one multi-row statement, below both
// databases' limits on parameters.
const maxBatchRows = 256

// batches splits items into runs of maxBatchRows, then of falling powers
// of two: every statement has one of a few lengths, so each is prepared
// once and kept.
func batches[T any](items []T) [][]T {
	var out [][]T
	for size := maxBatchRows; len(items) > 0; {
		for size > len(items) {
			size /= 2
		}
		out = append(out, items[:size])
		items = items[size:]
	}
	return out
}

// DeletePolicy removes policy id and its slots (the backups it made
// stay).
func (t *tx) DeletePolicy(ctx context.Context, id string) error {
	for _, table := range []string{"policy_slots", "policy_backups"} {
		if _, err := t.exec(ctx, t.d.rebind("DELETE FROM "+table+" WHERE policy_id = ?"), id); err != nil {
			return fmt.Errorf("delete policy %s: %s: %w", id, table, err)
		}
	}
	n, err := t.execCount(ctx, t.d.rebind("DELETE FROM policies WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("delete policy %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s: %w", id, cairn.ErrNotFound)
	}
	return nil
}

const slotCols = "policy_id, slot_at, state, fired_at, late, detail, runs"

// InsertPolicySlots records slots, in statements of up to maxBatchRows
// rows: cairn.ErrExists when a policy has a record of one of them
// already (another process fired it). The others are written then, so
// the caller rolls its transaction back.
func (t *tx) InsertPolicySlots(ctx context.Context, slots ...cairn.PolicySlot) error {
	for _, chunk := range batches(slots) {
		args := make([]any, 0, 8*len(chunk))
		for _, s := range chunk {
			runs, err := jsonArg(s.Runs)
			if err != nil {
				return fmt.Errorf("policy %s slot %s: %w", s.PolicyID, s.SlotAt, err)
			}
			args = append(args, s.PolicyID, t.d.Time(s.SlotAt), s.State, t.d.Time(s.FiredAt), s.Late, s.Detail, runs, false)
		}
		rows := strings.Repeat(", (?, ?, ?, ?, ?, ?, ?, ?)", len(chunk))[2:]
		n, err := t.execCount(ctx, t.d.rebind("INSERT INTO policy_slots ("+slotCols+", notified) VALUES "+rows+" ON CONFLICT DO NOTHING"), args...)
		first := chunk[0]
		if err != nil {
			return fmt.Errorf("insert %d policy slots from policy %s slot %s: %w", len(chunk), first.PolicyID, first.SlotAt.Format(time.RFC3339), err)
		}
		if int(n) != len(chunk) {
			if len(chunk) == 1 {
				return fmt.Errorf("policy %s slot %s: recorded already: %w", first.PolicyID, first.SlotAt.Format(time.RFC3339), cairn.ErrExists)
			}
			return fmt.Errorf("%d of %d policy slots from policy %s slot %s: recorded already: %w",
				len(chunk)-int(n), len(chunk), first.PolicyID, first.SlotAt.Format(time.RFC3339), cairn.ErrExists)
		}
	}
	return nil
}

// UpdatePolicySlot writes a recorded slot's state, detail, lateness and
// runs: cairn.ErrNotFound when the policy has no record of the slot.
func (t *tx) UpdatePolicySlot(ctx context.Context, s cairn.PolicySlot) error {
	runs, err := jsonArg(s.Runs)
	if err != nil {
		return fmt.Errorf("policy %s slot %s: %w", s.PolicyID, s.SlotAt, err)
	}
	n, err := t.execCount(ctx, t.d.rebind("UPDATE policy_slots SET state = ?, late = ?, detail = ?, runs = ? WHERE policy_id = ? AND slot_at = ?"),
		s.State, s.Late, s.Detail, runs, s.PolicyID, t.d.Time(s.SlotAt))
	if err != nil {
		return fmt.Errorf("update policy %s slot %s: %w", s.PolicyID, s.SlotAt.Format(time.RFC3339), err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s slot %s: %w", s.PolicyID, s.SlotAt.Format(time.RFC3339), cairn.ErrNotFound)
	}
	return nil
}

func (t *tx) policySlots(ctx context.Context, q string, args []any) ([]cairn.PolicySlot, error) {
	out := []cairn.PolicySlot{}
	err := t.all(ctx, "policy slots", t.d.rebind(q), args, func(r *sql.Rows) error {
		var s cairn.PolicySlot
		if err := r.Scan(&s.PolicyID, timeDest{&s.SlotAt}, &s.State, timeDest{&s.FiredAt}, &s.Late, &s.Detail, jsonText{&s.Runs}); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// FiringPolicySlots lists at most limit slots in state firing, of every
// policy, the oldest slot first. The state is a literal in the query, so
// that both dialects read the partial index that holds only these
// (0016_policy_slots_firing.sql).
func (t *tx) FiringPolicySlots(ctx context.Context, limit int) ([]cairn.PolicySlot, error) {
	return t.policySlots(ctx, "SELECT "+slotCols+" FROM policy_slots WHERE state = '"+cairn.SlotFiring+"' ORDER BY slot_at, policy_id LIMIT ?", []any{limit})
}

// UnnotifiedPolicySlots lists at most limit slots, of every policy, not
// firing and not marked notified, the oldest slot first, through the
// partial index that holds only the unnotified
// (0019_policy_slots_notified.sql).
func (t *tx) UnnotifiedPolicySlots(ctx context.Context, limit int) ([]cairn.PolicySlot, error) {
	return t.policySlots(ctx, "SELECT "+slotCols+" FROM policy_slots WHERE NOT notified AND state <> '"+cairn.SlotFiring+"' ORDER BY slot_at, policy_id LIMIT ?", []any{limit})
}

// MarkPolicySlotsNotified marks slots notified, in statements of up to
// maxBatchRows slots; slots without a record (pruned, or their policy
// deleted) are passed over.
func (t *tx) MarkPolicySlotsNotified(ctx context.Context, slots ...cairn.PolicySlot) error {
	for _, chunk := range batches(slots) {
		args := make([]any, 0, 2*len(chunk))
		for _, s := range chunk {
			args = append(args, s.PolicyID, t.d.Time(s.SlotAt))
		}
		keys := strings.Repeat(" OR (policy_id = ? AND slot_at = ?)", len(chunk))[4:]
		if _, err := t.execCount(ctx, t.d.rebind("UPDATE policy_slots SET notified = true WHERE NOT notified AND ("+keys+")"), args...); err != nil {
			return fmt.Errorf("marking %d policy slots notified from policy %s: %w", len(chunk), chunk[0].PolicyID, err)
		}
	}
	return nil
}

// PolicySlots lists a policy's slots, newest first, at most limit (0:
// all).
func (t *tx) PolicySlots(ctx context.Context, policyID string, limit int) ([]cairn.PolicySlot, error) {
	q, args := "SELECT "+slotCols+" FROM policy_slots WHERE policy_id = ? ORDER BY slot_at DESC", []any{policyID}
	if limit > 0 {
		q, args = q+" LIMIT ?", append(args, limit)
	}
	return t.policySlots(ctx, q, args)
}

// PrunePolicySlots deletes a policy's slots before before, but for its
// newest keep: those older than the keep-th newest (when the policy has
// fewer, the subquery is NULL and nothing goes).
func (t *tx) PrunePolicySlots(ctx context.Context, policyID string, before time.Time, keep int) (int, error) {
	if keep <= 0 {
		return 0, fmt.Errorf("pruning policy %s slots: keep %d: %w", policyID, keep, cairn.ErrInvalid)
	}
	n, err := t.execCount(ctx, t.d.rebind(`DELETE FROM policy_slots WHERE policy_id = ? AND slot_at < ?
		AND slot_at < (SELECT slot_at FROM policy_slots WHERE policy_id = ? ORDER BY slot_at DESC LIMIT 1 OFFSET ?)`),
		policyID, t.d.Time(before), policyID, keep-1)
	if err != nil {
		return 0, fmt.Errorf("pruning policy %s slots: %w", policyID, err)
	}
	return int(n), nil
}

// InsertPolicyBackup records a backup a policy made: cairn.ErrExists
// when it is recorded already.
func (t *tx) InsertPolicyBackup(ctx context.Context, pb cairn.PolicyBackup) error {
	n, err := t.execCount(ctx, t.d.rebind("INSERT INTO policy_backups (policy_id, backup_id, target_id, slot_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
		pb.PolicyID, pb.BackupID, pb.TargetID, t.d.Time(pb.SlotAt))
	if err != nil {
		return fmt.Errorf("insert policy %s backup %s: %w", pb.PolicyID, pb.BackupID, err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s backup %s: %w", pb.PolicyID, pb.BackupID, cairn.ErrExists)
	}
	return nil
}

// PolicyBackups lists the backups a policy recorded, oldest slot first.
func (t *tx) PolicyBackups(ctx context.Context, policyID string) ([]cairn.PolicyBackup, error) {
	out := []cairn.PolicyBackup{}
	err := t.all(ctx, "policy backups", t.d.rebind("SELECT policy_id, backup_id, target_id, slot_at FROM policy_backups WHERE policy_id = ? ORDER BY slot_at, backup_id"),
		[]any{policyID}, func(r *sql.Rows) error {
			var pb cairn.PolicyBackup
			if err := r.Scan(&pb.PolicyID, &pb.BackupID, &pb.TargetID, timeDest{&pb.SlotAt}); err != nil {
				return err
			}
			out = append(out, pb)
			return nil
		})
	return out, err
}

// DeletePolicyBackup forgets a policy's backup: cairn.ErrNotFound when
// it has no such record.
func (t *tx) DeletePolicyBackup(ctx context.Context, policyID, backupID string) error {
	n, err := t.execCount(ctx, t.d.rebind("DELETE FROM policy_backups WHERE policy_id = ? AND backup_id = ?"), policyID, backupID)
	if err != nil {
		return fmt.Errorf("delete policy %s backup %s: %w", policyID, backupID, err)
	}
	if n == 0 {
		return fmt.Errorf("policy %s backup %s: %w", policyID, backupID, cairn.ErrNotFound)
	}
	return nil
}
