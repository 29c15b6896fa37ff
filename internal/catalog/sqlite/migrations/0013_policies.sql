-- Backup policies and their slots. A policy's definition (targets,
-- schedule, time zone, retention) is one JSON document; the columns
-- beside it are what the scheduler and the lists select on. A slot row
-- is written once, in the transaction that queues its backups, and the
-- primary key (policy_id, slot_at) is what makes a slot fire once
-- across restarts and across service processes sharing the catalog.
CREATE TABLE policies (
	id           TEXT PRIMARY KEY,
	project_id   TEXT NOT NULL,
	name         TEXT NOT NULL,
	enabled      INTEGER NOT NULL,
	spec         TEXT NOT NULL,
	next_slot_at INTEGER NOT NULL,
	next_fire_at INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	UNIQUE (project_id, name)
) STRICT;
CREATE INDEX policies_due ON policies (enabled, next_fire_at);
CREATE TABLE policy_slots (
	policy_id TEXT NOT NULL,
	slot_at   INTEGER NOT NULL,
	state     TEXT NOT NULL,
	fired_at  INTEGER NOT NULL,
	late      INTEGER NOT NULL,
	detail    TEXT NOT NULL,
	runs      TEXT NOT NULL,
	PRIMARY KEY (policy_id, slot_at)
) STRICT;
-- The backups a policy made and still holds, so that retention reads
-- what it may remove without walking every slot ever fired. A row goes
-- when retention finds its backup gone.
CREATE TABLE policy_backups (
	policy_id TEXT NOT NULL,
	backup_id TEXT NOT NULL,
	target_id TEXT NOT NULL,
	slot_at   INTEGER NOT NULL,
	PRIMARY KEY (policy_id, backup_id)
) STRICT;
