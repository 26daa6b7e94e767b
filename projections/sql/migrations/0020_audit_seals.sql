-- The audit chain's seals (issue 15 part 3, DESIGN 3.11): audit.sealed on
-- fw.audit.<stream>.<actor> (projection `audit`). One row per seal stored; the stream keeps
-- them too (FW_EVENTS), which is what `fleetward audit verify` reads.

CREATE TABLE fleetward.audit_seals (
    stored_seq   bigint PRIMARY KEY,        -- where the seal itself is stored in FW_EVENTS
    stream       text NOT NULL,             -- the sealed stream: FW_EVENTS
    seq          bigint NOT NULL,           -- the last sequence the head covers
    head         text NOT NULL,             -- chain(seq), hex
    anchor       bigint NOT NULL,           -- the sequence the chain starts from (0: genesis)
    period_start timestamptz NOT NULL,
    period_s     double precision NOT NULL,
    sealed_by    text NOT NULL,             -- the service that published it (svc:audit)
    sealed_at    timestamptz NOT NULL       -- stream time of the seal
);

CREATE VIEW fleet.audit_seals AS
    SELECT stored_seq, stream, seq, head, anchor, period_start, period_s, sealed_by, sealed_at
    FROM fleetward.audit_seals;
