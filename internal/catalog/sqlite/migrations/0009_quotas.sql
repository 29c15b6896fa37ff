-- The largest volume a project may make (per_volume_gigabytes; -1: no
-- limit), the quota class "default" (the quota a project made on its
-- first Keystone token starts with, and a project's quota set returns
-- to when it is deleted), and a snapshot's progress as
-- os-update_snapshot_status reports it ('' : cairn's own, from its state).
ALTER TABLE projects ADD COLUMN per_volume_gigabytes INTEGER NOT NULL DEFAULT -1;
CREATE TABLE quota_classes (
  name TEXT PRIMARY KEY,
  volumes INTEGER NOT NULL,
  gigabytes INTEGER NOT NULL,
  snapshots INTEGER NOT NULL,
  backups INTEGER NOT NULL,
  backup_gigabytes INTEGER NOT NULL,
  per_volume_gigabytes INTEGER NOT NULL
);
INSERT INTO quota_classes VALUES ('default', 10, 1000, 10, 10, 1000, -1);
ALTER TABLE snapshots ADD COLUMN progress TEXT NOT NULL DEFAULT '';
