-- A task whose Run failed records why before its Fail cleans up, so a
-- restart resumes the cleanup instead of running the task again.
ALTER TABLE tasks ADD COLUMN fail_cause TEXT COLLATE "C" NOT NULL DEFAULT '';
