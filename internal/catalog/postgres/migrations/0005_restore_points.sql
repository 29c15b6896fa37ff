-- Restore points: quiesced snapshots of an instance's volume kept on the
-- host between backups (cairn.RestorePoint).
CREATE TABLE restore_points (
	id             TEXT COLLATE "C" PRIMARY KEY,
	project_id     TEXT COLLATE "C" NOT NULL REFERENCES projects (id),
	instance_id    TEXT COLLATE "C" NOT NULL,
	volume_id      TEXT COLLATE "C" NOT NULL,
	snapshot_id    TEXT COLLATE "C" NOT NULL,
	container      TEXT COLLATE "C" NOT NULL,
	overlay        TEXT COLLATE "C" NOT NULL,
	data_timestamp TIMESTAMPTZ NOT NULL,
	record         BYTEA,
	created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX restore_points_instance ON restore_points (instance_id, data_timestamp, id);
