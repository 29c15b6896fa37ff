-- The scheduler records every due slot first, in state 'firing', and
-- then queues their backups, a batch at a time; it finds the slots still
-- to queue (including those a process that died left) through this
-- index, which holds only them, without reading every slot ever kept.
CREATE INDEX policy_slots_firing ON policy_slots (slot_at, policy_id) WHERE state = 'firing';
