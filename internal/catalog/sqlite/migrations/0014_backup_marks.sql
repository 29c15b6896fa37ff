-- What cairn records of a backup (of a volume or of an instance)
-- beside its row: whether it is protected from deletion, and the
-- outcome of its last verification and its last restore drill (JSON,
-- "" for none). The row goes with the backup's.
CREATE TABLE backup_marks (
	backup_id    TEXT PRIMARY KEY,
	protected    INTEGER NOT NULL,
	verification TEXT NOT NULL,
	drill        TEXT NOT NULL
) STRICT;
