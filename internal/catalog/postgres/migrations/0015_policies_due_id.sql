-- The due policies are read in (next_fire_at, id) order, a batch at a
-- time. With the index on next_fire_at alone, every policy due at the
-- same second was read and sorted by id for each batch (10,000 policies
-- due at once: 40 batches of 10,000 rows); with id in the index a batch
-- reads its own rows.
DROP INDEX policies_due;
CREATE INDEX policies_due ON policies (enabled, next_fire_at, id);
