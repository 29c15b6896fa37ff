-- Backup policies and their slots. A policy's definition (targets,
-- schedule, time zone, retention) is one JSON document; the columns
-- beside it are what the scheduler and the lists select on. A slot row
-- is written once, in the transaction that queues its backups, and the
-- primary key (policy_id, slot_at) is what makes a slot fire once
-- across restarts and across service processes sharing the catalog.
CREATE TABLE policies (
	id           TEXT COLLATE "C" PRIMARY KEY,
	project_id   TEXT COLLATE "C" NOT NULL,
	name         TEXT COLLATE "C" NOT NULL,
	enabled      BOOLEAN NOT NULL,
	spec         TEXT NOT NULL,
	next_slot_at TIMESTAMPTZ NOT NULL,
	next_fire_at TIMESTAMPTZ NOT NULL,
	created_at   TIMESTAMPTZ NOT NULL,
	updated_at   TIMESTAMPTZ NOT NULL,
	UNIQUE (project_id, name)
);
CREATE INDEX policies_due ON policies (enabled, next_fire_at);
CREATE TABLE policy_slots (
	policy_id TEXT COLLATE "C" NOT NULL,
	slot_at   TIMESTAMPTZ NOT NULL,
	state     TEXT COLLATE "C" NOT NULL,
	fired_at  TIMESTAMPTZ NOT NULL,
	late      BOOLEAN NOT NULL,
	detail    TEXT NOT NULL,
	runs      TEXT NOT NULL,
	PRIMARY KEY (policy_id, slot_at)
);
-- The backups a policy made and still holds, so that retention reads
-- what it may remove without walking every slot ever fired. A row goes
-- when retention finds its backup gone.
CREATE TABLE policy_backups (
	policy_id TEXT COLLATE "C" NOT NULL,
	backup_id TEXT COLLATE "C" NOT NULL,
	target_id TEXT COLLATE "C" NOT NULL,
	slot_at   TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (policy_id, backup_id)
);
