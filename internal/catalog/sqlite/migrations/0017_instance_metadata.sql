-- Instance metadata: the tenant's key/value pairs as a JSON object of
-- strings, '' for none, as volumes' (0006); a policy's tag selects
-- instances by it.
ALTER TABLE instances ADD COLUMN metadata TEXT NOT NULL DEFAULT '';
