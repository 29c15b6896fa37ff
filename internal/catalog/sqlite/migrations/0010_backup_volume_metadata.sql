-- The metadata of the volume a backup was taken of, as it was then: a
-- JSON object of strings like a volume's metadata, '' for none. A
-- restore into a new volume gives it this metadata.
ALTER TABLE backups ADD COLUMN volume_metadata TEXT NOT NULL DEFAULT '';
