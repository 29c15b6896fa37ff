-- Restore points: quiesced snapshots of an instance's volume kept on the
-- host between backups (cairn.RestorePoint).
CREATE TABLE restore_points (
	id             TEXT PRIMARY KEY,
	project_id     TEXT NOT NULL REFERENCES projects (id),
	instance_id    TEXT NOT NULL,
	volume_id      TEXT NOT NULL,
	snapshot_id    TEXT NOT NULL,
	container      TEXT NOT NULL,
	overlay        TEXT NOT NULL,
	data_timestamp INTEGER NOT NULL,
	record         BLOB,
	created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX restore_points_instance ON restore_points (instance_id, data_timestamp, id);
