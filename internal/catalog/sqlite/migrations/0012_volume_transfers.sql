-- Volume transfers (the block storage API's os-volume-transfer): a
-- project offers one of its volumes to whoever holds the transfer's ID
-- and key. The key is kept only as a salted SHA-256 (hex). A volume has
-- at most one transfer; accepting or deleting it removes the row.
CREATE TABLE volume_transfers (
	id         TEXT PRIMARY KEY,
	project_id TEXT NOT NULL,
	volume_id  TEXT NOT NULL UNIQUE,
	name       TEXT NOT NULL,
	salt       TEXT NOT NULL,
	key_hash   TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX volume_transfers_project ON volume_transfers (project_id, created_at);
