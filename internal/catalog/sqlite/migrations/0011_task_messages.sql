-- A failed task is a user message of the block storage API (from
-- microversion 3.3): the request that made the task ('' for tasks made
-- before), and whether the project deleted the message (the task stays).
ALTER TABLE tasks ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN message_deleted INTEGER NOT NULL DEFAULT 0;
