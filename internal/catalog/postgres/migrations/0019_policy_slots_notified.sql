-- A slot's events (schedule.fired, schedule.missed) are sent after its
-- transaction commits, and the slot then marked notified: the table is
-- their outbox, so a process killed between the commit and the send
-- leaves the slot unnotified, and the next scheduler sends them. Slots
-- recorded before this migration count as notified.
ALTER TABLE policy_slots ADD COLUMN notified BOOLEAN NOT NULL DEFAULT true;
CREATE INDEX policy_slots_unnotified ON policy_slots (slot_at, policy_id) WHERE NOT notified;
