-- Who made each volume, snapshot and backup (the caller's user, '' for
-- rows made before); a volume's source volume (a clone's, '' for none),
-- whether it is bootable, and its admin metadata (readonly): a JSON
-- object of strings like metadata, '' for none, which the tenant's
-- metadata calls never write.
ALTER TABLE volumes ADD COLUMN user_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN source_volid TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN bootable BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE volumes ADD COLUMN admin_metadata TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN user_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN user_id TEXT COLLATE "C" NOT NULL DEFAULT '';
