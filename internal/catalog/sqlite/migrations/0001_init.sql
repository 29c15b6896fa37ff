-- The catalog's first schema (SQLite). Times are INTEGER unix microseconds
-- (UTC); booleans are INTEGER 0 or 1. Text compares byte-wise (BINARY),
-- as PostgreSQL's schema asks with COLLATE "C".

CREATE TABLE projects (
	id                     TEXT PRIMARY KEY,
	name                   TEXT NOT NULL,
	quota_volumes          INTEGER NOT NULL,
	quota_gigabytes        INTEGER NOT NULL,
	quota_snapshots        INTEGER NOT NULL,
	quota_backups          INTEGER NOT NULL,
	quota_backup_gigabytes INTEGER NOT NULL,
	created_at             INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	admin      INTEGER NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX tokens_project ON tokens (project_id, created_at, id);

CREATE TABLE volumes (
	id          TEXT PRIMARY KEY,
	project_id  TEXT NOT NULL REFERENCES projects (id),
	name        TEXT NOT NULL,
	description TEXT NOT NULL,
	size        INTEGER NOT NULL,
	status      TEXT NOT NULL,
	fail_reason TEXT NOT NULL,
	snapshot_id TEXT NOT NULL,
	backup_id   TEXT NOT NULL,
	engine_id   TEXT NOT NULL,
	attached    INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX volumes_project_created ON volumes (project_id, created_at, id);
CREATE INDEX volumes_created ON volumes (created_at, id);

CREATE TABLE snapshots (
	id          TEXT PRIMARY KEY,
	project_id  TEXT NOT NULL REFERENCES projects (id),
	volume_id   TEXT NOT NULL,
	name        TEXT NOT NULL,
	description TEXT NOT NULL,
	size        INTEGER NOT NULL,
	status      TEXT NOT NULL,
	fail_reason TEXT NOT NULL,
	engine_id   TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX snapshots_project_created ON snapshots (project_id, created_at, id);
CREATE INDEX snapshots_created ON snapshots (created_at, id);
CREATE INDEX snapshots_volume ON snapshots (volume_id, created_at, id);

CREATE TABLE backups (
	id                      TEXT PRIMARY KEY,
	project_id              TEXT NOT NULL REFERENCES projects (id),
	volume_id               TEXT NOT NULL,
	snapshot_id             TEXT NOT NULL,
	name                    TEXT NOT NULL,
	description             TEXT NOT NULL,
	container               TEXT NOT NULL,
	status                  TEXT NOT NULL,
	fail_reason             TEXT NOT NULL,
	size                    INTEGER NOT NULL,
	object_count            INTEGER NOT NULL,
	stored_bytes            INTEGER NOT NULL,
	incremental             INTEGER NOT NULL,
	parent_id               TEXT NOT NULL,
	data_timestamp          INTEGER NOT NULL,
	repo_id                 TEXT NOT NULL,
	temp_snapshot_engine_id TEXT NOT NULL,
	created_at              INTEGER NOT NULL,
	updated_at              INTEGER NOT NULL
) STRICT;
CREATE INDEX backups_project_created ON backups (project_id, created_at, id);
CREATE INDEX backups_created ON backups (created_at, id);
CREATE INDEX backups_volume ON backups (volume_id, created_at, id);
CREATE INDEX backups_snapshot ON backups (snapshot_id, created_at, id);
CREATE INDEX backups_parent ON backups (parent_id, created_at, id);

-- Tasks outlive their project (history); project_id is not a reference.
CREATE TABLE tasks (
	id             TEXT PRIMARY KEY,
	project_id     TEXT NOT NULL,
	kind           TEXT NOT NULL,
	resource_id    TEXT NOT NULL,
	state          TEXT NOT NULL,
	params         BLOB,
	error          TEXT NOT NULL,
	attempts       INTEGER NOT NULL,
	progress_done  INTEGER NOT NULL,
	progress_total INTEGER NOT NULL,
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	finished_at    INTEGER
) STRICT;
CREATE INDEX tasks_state_created ON tasks (state, created_at, id);
CREATE INDEX tasks_project_created ON tasks (project_id, created_at, id);
CREATE INDEX tasks_resource ON tasks (resource_id, created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id);
