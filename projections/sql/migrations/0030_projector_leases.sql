-- Who writes each projection (issue 18 part 3, DESIGN 3.5): a projector's runner writes only
-- while it holds the session-level advisory lock of every projection it feeds, on a connection
-- of its own (services/projector/lease.py). Each such lease session says here which process it
-- serves; `fleetward status` shows the rows whose session is alive (pg_stat_activity), active
-- when the session holds the locks (pg_locks), else standing by. A row outlives its session
-- until the next lease session starts (which deletes the dead ones), never in the status.

CREATE TABLE fleetward.projector_leases (
    backend_pid   integer NOT NULL,             -- the lease session (pg_backend_pid())
    backend_start timestamptz NOT NULL,         -- with the pid: that session, not a later one
    durable       text NOT NULL,                -- the runner's durable consumer
    projections   text[] NOT NULL,              -- the projections it feeds
    lock_keys     bigint[] NOT NULL,            -- their advisory lock keys
    host          text NOT NULL,                -- the process: host and pid
    pid           integer NOT NULL,
    since         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backend_pid, backend_start)
);
