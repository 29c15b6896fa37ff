-- Volume types: named sets of extra specs an admin defines (a JSON
-- object of strings, '' for none), public or private; a private type's
-- projects are its rows in volume_type_projects (no reference to
-- projects: the block storage API grants access to a Keystone project
-- before it ever calls). The default type, __DEFAULT__, is made here
-- with a fixed ID (cairn.DefaultVolumeTypeID); every volume records its
-- type's ID, and the volumes made before types existed are of the
-- default type.
CREATE TABLE volume_types (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	description TEXT NOT NULL,
	is_public   INTEGER NOT NULL,
	extra_specs TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
CREATE TABLE volume_type_projects (
	volume_type_id TEXT NOT NULL REFERENCES volume_types (id) ON DELETE CASCADE,
	project_id     TEXT NOT NULL,
	PRIMARY KEY (volume_type_id, project_id)
) STRICT;
INSERT INTO volume_types (id, name, description, is_public, extra_specs, created_at, updated_at)
	VALUES ('51722b98-91c6-49e4-8fd7-d5c49e4be5e7', '__DEFAULT__', 'Default Volume Type', 1, '',
		CAST(strftime('%s', 'now') AS INTEGER) * 1000000, CAST(strftime('%s', 'now') AS INTEGER) * 1000000);
ALTER TABLE volumes ADD COLUMN volume_type_id TEXT NOT NULL DEFAULT '51722b98-91c6-49e4-8fd7-d5c49e4be5e7';
CREATE INDEX volumes_volume_type ON volumes (volume_type_id);
