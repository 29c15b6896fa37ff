-- The largest volume a project may make (per_volume_gigabytes; -1: no
-- limit), the quota class "default" (the quota a project made on its
-- first Keystone token starts with, and a project's quota set returns
-- to when it is deleted), and a snapshot's progress as
-- os-update_snapshot_status reports it ('' : cairn's own, from its state).
ALTER TABLE projects ADD COLUMN per_volume_gigabytes BIGINT NOT NULL DEFAULT -1;
CREATE TABLE quota_classes (
  name TEXT COLLATE "C" PRIMARY KEY,
  volumes BIGINT NOT NULL,
  gigabytes BIGINT NOT NULL,
  snapshots BIGINT NOT NULL,
  backups BIGINT NOT NULL,
  backup_gigabytes BIGINT NOT NULL,
  per_volume_gigabytes BIGINT NOT NULL
);
INSERT INTO quota_classes VALUES ('default', 10, 1000, 10, 10, 1000, -1);
ALTER TABLE snapshots ADD COLUMN progress TEXT COLLATE "C" NOT NULL DEFAULT '';
