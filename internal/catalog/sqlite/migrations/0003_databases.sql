-- Database instances, their backups and the projects' and instances'
-- backup strategies (SQLite; times and booleans as in 0001). A datastore reference is three columns; a backup's
-- record is the engine's JSON, opaque here, NULL when empty.

CREATE TABLE instances (
	id                   TEXT PRIMARY KEY,
	project_id           TEXT NOT NULL REFERENCES projects (id),
	name                 TEXT NOT NULL,
	status               TEXT NOT NULL,
	operating_status     TEXT NOT NULL,
	fail_reason          TEXT NOT NULL,
	datastore_type       TEXT NOT NULL,
	datastore_version    TEXT NOT NULL,
	datastore_version_id TEXT NOT NULL,
	volume_size          INTEGER NOT NULL,
	volume_used          INTEGER NOT NULL,
	address              TEXT NOT NULL,
	port                 INTEGER NOT NULL,
	backup_id            TEXT NOT NULL,
	volume_id            TEXT NOT NULL,
	created_at           INTEGER NOT NULL,
	updated_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX instances_project_created ON instances (project_id, created_at, id);
CREATE INDEX instances_created ON instances (created_at, id);
CREATE INDEX instances_datastore ON instances (datastore_type, created_at, id);

CREATE TABLE database_backups (
	id                   TEXT PRIMARY KEY,
	project_id           TEXT NOT NULL REFERENCES projects (id),
	instance_id          TEXT NOT NULL,
	name                 TEXT NOT NULL,
	description          TEXT NOT NULL,
	status               TEXT NOT NULL,
	fail_reason          TEXT NOT NULL,
	strategy             TEXT NOT NULL,
	container            TEXT NOT NULL,
	parent_id            TEXT NOT NULL,
	datastore_type       TEXT NOT NULL,
	datastore_version    TEXT NOT NULL,
	datastore_version_id TEXT NOT NULL,
	size                 INTEGER NOT NULL,
	volume_size          INTEGER NOT NULL,
	location             TEXT NOT NULL,
	data_timestamp       INTEGER NOT NULL,
	volume_id            TEXT NOT NULL,
	snapshot_id          TEXT NOT NULL,
	data                 TEXT NOT NULL,
	overlay              TEXT NOT NULL,
	record               BLOB,
	created_at           INTEGER NOT NULL,
	updated_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX database_backups_project_created ON database_backups (project_id, created_at, id);
CREATE INDEX database_backups_created ON database_backups (created_at, id);
CREATE INDEX database_backups_instance ON database_backups (instance_id, created_at, id);
CREATE INDEX database_backups_datastore ON database_backups (datastore_type, created_at, id);
CREATE INDEX database_backups_parent ON database_backups (parent_id, created_at, id);

-- instance_id '' is the project's default strategy. Strategies are the
-- project's settings and go with it.
CREATE TABLE backup_strategies (
	project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
	instance_id TEXT NOT NULL,
	strategy    TEXT NOT NULL,
	container   TEXT NOT NULL,
	backend     TEXT NOT NULL,
	PRIMARY KEY (project_id, instance_id)
) STRICT;
