-- A catalog's leases of running service processes: `cairn serve` holds
-- the one named serve while it runs (renewed well before expires_at), so
-- a second service on the same catalog refuses to start.
CREATE TABLE service_leases (
	name       TEXT COLLATE "C" PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL
);
