-- Volume and snapshot metadata: the tenant's key/value pairs as a JSON
-- object of strings, '' for none.
ALTER TABLE volumes ADD COLUMN metadata TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN metadata TEXT NOT NULL DEFAULT '';
