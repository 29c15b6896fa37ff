-- Database instances, their backups and the projects' and instances'
-- backup strategies (PostgreSQL). A datastore reference is three columns; a backup's
-- record is the engine's JSON, opaque here, NULL when empty.

CREATE TABLE instances (
	id                   TEXT COLLATE "C" PRIMARY KEY,
	project_id           TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	name                 TEXT COLLATE "C" NOT NULL,
	status               TEXT COLLATE "C" NOT NULL,
	operating_status     TEXT COLLATE "C" NOT NULL,
	fail_reason          TEXT COLLATE "C" NOT NULL,
	datastore_type       TEXT COLLATE "C" NOT NULL,
	datastore_version    TEXT COLLATE "C" NOT NULL,
	datastore_version_id TEXT COLLATE "C" NOT NULL,
	volume_size          BIGINT NOT NULL,
	volume_used          BIGINT NOT NULL,
	address              TEXT COLLATE "C" NOT NULL,
	port                 BIGINT NOT NULL,
	backup_id            TEXT COLLATE "C" NOT NULL,
	volume_id            TEXT COLLATE "C" NOT NULL,
	created_at           TIMESTAMPTZ NOT NULL,
	updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX instances_project_created ON instances (project_id, created_at, id);
CREATE INDEX instances_created ON instances (created_at, id);
CREATE INDEX instances_datastore ON instances (datastore_type, created_at, id);

CREATE TABLE database_backups (
	id                   TEXT COLLATE "C" PRIMARY KEY,
	project_id           TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	instance_id          TEXT COLLATE "C" NOT NULL,
	name                 TEXT COLLATE "C" NOT NULL,
	description          TEXT COLLATE "C" NOT NULL,
	status               TEXT COLLATE "C" NOT NULL,
	fail_reason          TEXT COLLATE "C" NOT NULL,
	strategy             TEXT COLLATE "C" NOT NULL,
	container            TEXT COLLATE "C" NOT NULL,
	parent_id            TEXT COLLATE "C" NOT NULL,
	datastore_type       TEXT COLLATE "C" NOT NULL,
	datastore_version    TEXT COLLATE "C" NOT NULL,
	datastore_version_id TEXT COLLATE "C" NOT NULL,
	size                 BIGINT NOT NULL,
	volume_size          BIGINT NOT NULL,
	location             TEXT COLLATE "C" NOT NULL,
	data_timestamp       TIMESTAMPTZ NOT NULL,
	volume_id            TEXT COLLATE "C" NOT NULL,
	snapshot_id          TEXT COLLATE "C" NOT NULL,
	data                 TEXT COLLATE "C" NOT NULL,
	overlay              TEXT COLLATE "C" NOT NULL,
	record               BYTEA,
	created_at           TIMESTAMPTZ NOT NULL,
	updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX database_backups_project_created ON database_backups (project_id, created_at, id);
CREATE INDEX database_backups_created ON database_backups (created_at, id);
CREATE INDEX database_backups_instance ON database_backups (instance_id, created_at, id);
CREATE INDEX database_backups_datastore ON database_backups (datastore_type, created_at, id);
CREATE INDEX database_backups_parent ON database_backups (parent_id, created_at, id);

-- instance_id '' is the project's default strategy. Strategies are the
-- project's settings and go with it.
CREATE TABLE backup_strategies (
	project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
	instance_id TEXT COLLATE "C" NOT NULL,
	strategy    TEXT COLLATE "C" NOT NULL,
	container   TEXT COLLATE "C" NOT NULL,
	backend     TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (project_id, instance_id)
);
