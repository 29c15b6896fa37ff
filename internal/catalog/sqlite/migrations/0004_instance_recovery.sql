-- An instance's last recover in place (cairn.InstanceRecovery as JSON,
-- '' for none): its safety snapshot is what an undo puts back.
ALTER TABLE instances ADD COLUMN recovery TEXT NOT NULL DEFAULT '';
