-- The catalog's first schema (PostgreSQL). Text is COLLATE "C": it sorts
-- byte-wise, as SQLite's does, whatever the database's locale.

CREATE TABLE projects (
	id                     TEXT COLLATE "C" PRIMARY KEY,
	name                   TEXT COLLATE "C" NOT NULL,
	quota_volumes          BIGINT NOT NULL,
	quota_gigabytes        BIGINT NOT NULL,
	quota_snapshots        BIGINT NOT NULL,
	quota_backups          BIGINT NOT NULL,
	quota_backup_gigabytes BIGINT NOT NULL,
	created_at             TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
	id         TEXT COLLATE "C" PRIMARY KEY,
	project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
	name       TEXT COLLATE "C" NOT NULL,
	admin      BOOLEAN NOT NULL,
	hash       BYTEA NOT NULL UNIQUE,
	created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX tokens_project ON tokens (project_id, created_at, id);

CREATE TABLE volumes (
	id          TEXT COLLATE "C" PRIMARY KEY,
	project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	name        TEXT COLLATE "C" NOT NULL,
	description TEXT COLLATE "C" NOT NULL,
	size        BIGINT NOT NULL,
	status      TEXT COLLATE "C" NOT NULL,
	fail_reason TEXT COLLATE "C" NOT NULL,
	snapshot_id TEXT COLLATE "C" NOT NULL,
	backup_id   TEXT COLLATE "C" NOT NULL,
	engine_id   TEXT COLLATE "C" NOT NULL,
	attached    BOOLEAN NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX volumes_project_created ON volumes (project_id, created_at, id);
CREATE INDEX volumes_created ON volumes (created_at, id);

CREATE TABLE snapshots (
	id          TEXT COLLATE "C" PRIMARY KEY,
	project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	volume_id   TEXT COLLATE "C" NOT NULL,
	name        TEXT COLLATE "C" NOT NULL,
	description TEXT COLLATE "C" NOT NULL,
	size        BIGINT NOT NULL,
	status      TEXT COLLATE "C" NOT NULL,
	fail_reason TEXT COLLATE "C" NOT NULL,
	engine_id   TEXT COLLATE "C" NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX snapshots_project_created ON snapshots (project_id, created_at, id);
CREATE INDEX snapshots_created ON snapshots (created_at, id);
CREATE INDEX snapshots_volume ON snapshots (volume_id, created_at, id);

CREATE TABLE backups (
	id                      TEXT COLLATE "C" PRIMARY KEY,
	project_id              TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	volume_id               TEXT COLLATE "C" NOT NULL,
	snapshot_id             TEXT COLLATE "C" NOT NULL,
	name                    TEXT COLLATE "C" NOT NULL,
	description             TEXT COLLATE "C" NOT NULL,
	container               TEXT COLLATE "C" NOT NULL,
	status                  TEXT COLLATE "C" NOT NULL,
	fail_reason             TEXT COLLATE "C" NOT NULL,
	size                    BIGINT NOT NULL,
	object_count            BIGINT NOT NULL,
	stored_bytes            BIGINT NOT NULL,
	incremental             BOOLEAN NOT NULL,
	parent_id               TEXT COLLATE "C" NOT NULL,
	data_timestamp          TIMESTAMPTZ NOT NULL,
	repo_id                 TEXT COLLATE "C" NOT NULL,
	temp_snapshot_engine_id TEXT COLLATE "C" NOT NULL,
	created_at              TIMESTAMPTZ NOT NULL,
	updated_at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX backups_project_created ON backups (project_id, created_at, id);
CREATE INDEX backups_created ON backups (created_at, id);
CREATE INDEX backups_volume ON backups (volume_id, created_at, id);
CREATE INDEX backups_snapshot ON backups (snapshot_id, created_at, id);
CREATE INDEX backups_parent ON backups (parent_id, created_at, id);

-- Tasks outlive their project (history); project_id is not a reference.
CREATE TABLE tasks (
	id             TEXT COLLATE "C" PRIMARY KEY,
	project_id     TEXT COLLATE "C" NOT NULL,
	kind           TEXT COLLATE "C" NOT NULL,
	resource_id    TEXT COLLATE "C" NOT NULL,
	state          TEXT COLLATE "C" NOT NULL,
	params         BYTEA,
	error          TEXT COLLATE "C" NOT NULL,
	attempts       BIGINT NOT NULL,
	progress_done  BIGINT NOT NULL,
	progress_total BIGINT NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	updated_at     TIMESTAMPTZ NOT NULL,
	finished_at    TIMESTAMPTZ
);
CREATE INDEX tasks_state_created ON tasks (state, created_at, id);
CREATE INDEX tasks_project_created ON tasks (project_id, created_at, id);
CREATE INDEX tasks_resource ON tasks (resource_id, created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id);
