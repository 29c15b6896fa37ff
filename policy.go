package cairn

import "time"

// Policy is a backup policy: what to back up, on which schedule, and
// which of its backups to keep. The scheduler fires each of its slots
// once (PolicySlot); the retention rules decide, per target, among the
// backups the policy made.
type Policy struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	Name      string `json:"name"`
	Enabled   bool   `json:"enabled"`
	PolicySpec
	// NextSlotAt is the next slot (nominal, as the schedule gives it);
	// NextFireAt is when it fires: NextSlotAt plus the policy's jitter.
	// Zero while the policy is disabled.
	NextSlotAt time.Time `json:"next_slot_at"`
	NextFireAt time.Time `json:"next_fire_at"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// PolicySpec is what a policy's owner writes.
type PolicySpec struct {
	// Action is what each slot does to the targets: PolicyActionBackup
	// (the default) backs them up, PolicyActionVerify reads their backups
	// back, PolicyActionDrill restores one and checks it.
	Action string       `json:"action,omitempty"`
	Target PolicyTarget `json:"target"`
	// Schedule is a five-field cron expression read in TimeZone (an
	// IANA name, UTC when empty).
	Schedule string `json:"schedule"`
	TimeZone string `json:"time_zone"`
	// JitterSeconds, when set, delays every slot by a fixed share of it,
	// chosen by the policy's ID.
	JitterSeconds int `json:"jitter_seconds"`
	// FullEvery makes every Nth backup of a target a full one (1: all
	// full); the others are incremental. 0 is the default, 7.
	FullEvery int `json:"full_every"`
	// Strategy is an instance's backup strategy ("" its own).
	Strategy  string `json:"strategy,omitempty"`
	Container string `json:"container,omitempty"`
	// CatchUp is what happens to the slots missed while no service ran:
	// CatchUpOnce fires the latest of them once, CatchUpSkip none. Every
	// missed slot is recorded and raises a schedule.missed event.
	CatchUp   string         `json:"catch_up"`
	Retention RetentionRules `json:"retention"`
	// PITRWindowSeconds, for instances, keeps every backup needed to
	// restore to any second of that long before the archive's newest.
	PITRWindowSeconds int `json:"pitr_window_seconds,omitempty"`
	// VerifyShare, for a verify policy, is the share of each backup's
	// chunks read back, in (0,1] (0: all); ReverifyDays how old a
	// backup's last verification may be before it is verified again (0:
	// never again once passed).
	VerifyShare  float64 `json:"verify_share,omitempty"`
	ReverifyDays int     `json:"reverify_days,omitempty"`
	// DrillPick, for a drill policy, chooses the backup each slot
	// restores: DrillLatest (the default), or DrillRandom among those
	// taken in the last DrillWithinSeconds.
	DrillPick          string `json:"drill_pick,omitempty"`
	DrillWithinSeconds int    `json:"drill_within_seconds,omitempty"`
	// DrillQuery, for a drill policy of instances, is a query each drill
	// runs, read-only, in DrillDatabase on the restored instance after
	// the datastore's own check (pg_amcheck, mariadb-check): it must
	// succeed and return a row, whose first column the drill records.
	DrillQuery    string `json:"drill_query,omitempty"`
	DrillDatabase string `json:"drill_database,omitempty"`
}

// Policy actions.
const (
	PolicyActionBackup = "backup"
	PolicyActionVerify = "verify"
	PolicyActionDrill  = "drill"
)

// Drill picks.
const (
	DrillLatest = "latest"
	DrillRandom = "random"
)

// BackupMarks are what cairn records of a backup beside its row: its
// protection, and the outcome of its last verification and drill.
type BackupMarks struct {
	BackupID string `json:"backup_id"`
	// Protected backups are never deleted, by a request or by retention.
	Protected    bool         `json:"protected"`
	Verification *BackupCheck `json:"verification,omitempty"`
	Drill        *BackupCheck `json:"drill,omitempty"`
}

// Check states.
const (
	CheckPassed = "passed"
	CheckFailed = "failed"
)

// BackupCheck is the outcome of a verification (chunks read back) or a
// drill (a restore and a check of what it restored).
type BackupCheck struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
	// Chunks and Bytes are what a verification read; Bytes and Seconds
	// what a drill restored and how long it took (its RTO evidence).
	Chunks  int     `json:"chunks,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
}

// Policy targets' kinds.
const (
	TargetVolume   = "volume"
	TargetInstance = "instance"
)

// Catch-up rules.
const (
	CatchUpOnce = "once"
	CatchUpSkip = "skip"
)

// PolicyTarget chooses a policy's targets in its project: the volumes or
// instances named, and those whose metadata has the tag.
type PolicyTarget struct {
	Kind string   `json:"kind"`
	IDs  []string `json:"ids,omitempty"`
	// Tag is "key=value": every target whose metadata holds it, at the
	// time each slot fires.
	Tag string `json:"tag,omitempty"`
}

// RetentionRules are a policy's keep rules (package retention decides
// with them); zero fields are off, and no rules at all keep everything.
type RetentionRules struct {
	Last    int `json:"keep_last,omitempty"`
	Hourly  int `json:"keep_hourly,omitempty"`
	Daily   int `json:"keep_daily,omitempty"`
	Weekly  int `json:"keep_weekly,omitempty"`
	Monthly int `json:"keep_monthly,omitempty"`
	Yearly  int `json:"keep_yearly,omitempty"`
	// Within is a duration ("72h") measured back from the newest backup.
	Within string `json:"keep_within,omitempty"`
}

// Slot states.
const (
	// SlotFiring: the slot is recorded at its time and the policy moved
	// on; its backups are being queued. The scheduler records every due
	// slot first, then queues their backups, so that a slot is recorded
	// at its time however many others fall due with it (10,000 at one
	// second: within 0.6 s on an idle machine); a slot left firing by a
	// process that died is queued by the next one.
	SlotFiring = "firing"
	// SlotFired: the slot's backups were queued (on time or caught up).
	SlotFired = "fired"
	// SlotMissed: no service ran at the slot and the catch-up rule did
	// not fire it.
	SlotMissed = "missed"
	// SlotSkipped: the slot had nothing to back up, or every target was
	// busy with a backup already.
	SlotSkipped = "skipped"
)

// PolicySlot is the record that a policy's slot happened: the catalog
// holds at most one per (policy, slot), which is how a slot fires once
// across restarts and processes.
type PolicySlot struct {
	PolicyID string    `json:"policy_id"`
	SlotAt   time.Time `json:"slot_at"`
	State    string    `json:"state"`
	FiredAt  time.Time `json:"fired_at"`
	// Late: fired after its time by the catch-up rule.
	Late   bool        `json:"late,omitempty"`
	Detail string      `json:"detail,omitempty"`
	Runs   []PolicyRun `json:"runs,omitempty"`
}

// PolicyRun is one target's part of a slot: the backup queued, or why
// none was.
type PolicyRun struct {
	TargetID string `json:"target_id"`
	BackupID string `json:"backup_id,omitempty"`
	Full     bool   `json:"full,omitempty"`
	Skipped  string `json:"skipped,omitempty"`
}

// PolicyBackup is a backup a policy made and has not seen deleted: what
// its retention decides among.
type PolicyBackup struct {
	PolicyID string    `json:"policy_id"`
	BackupID string    `json:"backup_id"`
	TargetID string    `json:"target_id"`
	SlotAt   time.Time `json:"slot_at"`
}

// Actions of a retention decision.
const (
	ActionKeep   = "keep"
	ActionRemove = "remove"
	// ActionDeferred: to be removed, but another backup builds on it and
	// is being removed too; the next run removes it.
	ActionDeferred = "deferred"
)

// Floors a policy keeps whatever its rules say.
const (
	FloorPITR           = "pitr-window"
	FloorParentOfKept   = "parent-of-kept"
	FloorProtected      = "protected"
	FloorNewestVerified = "newest-verified"
	FloorNewestDrilled  = "newest-drilled"
)

// RetentionDecision is what a retention run does with one backup.
type RetentionDecision struct {
	BackupID string    `json:"backup_id"`
	Time     time.Time `json:"time"`
	Action   string    `json:"action"`
	Reasons  []string  `json:"reasons"`
}

// RetentionTarget is a retention run's decisions for one target, newest
// backup first.
type RetentionTarget struct {
	TargetID string              `json:"target_id"`
	Backups  []RetentionDecision `json:"backups"`
}

// RetentionReport is a retention run.
type RetentionReport struct {
	PolicyID string            `json:"policy_id"`
	DryRun   bool              `json:"dry_run"`
	Targets  []RetentionTarget `json:"targets"`
	Kept     int               `json:"kept"`
	Removed  int               `json:"removed"`
	Deferred int               `json:"deferred"`
}
