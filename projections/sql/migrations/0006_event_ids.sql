-- Idempotence by event id (DESIGN 3.1): an event applies once, however late a copy of it is
-- stored (another Nats-Msg-Id, or after the stream's duplicate window), live and in a rebuild.

-- FW_EVENTS: the first stream sequence at which each event id was stored, per subject kind
-- (services/projector/ledger.py). Written in the same transaction as the checkpoints of the
-- projections that read the kind; a rebuild never empties it (it finds the same sequences).
CREATE TABLE fleetward.event_ids (
    stream text   NOT NULL,
    kind   text   NOT NULL,               -- the subject kind: agent, task, esc, ...
    id     text   NOT NULL,               -- the event id
    seq    bigint NOT NULL,               -- the first sequence it was stored at
    PRIMARY KEY (stream, kind, id)
);

-- FW_HEARTBEATS (too many for a ledger): the id of the last heartbeat counted for each agent; a
-- heartbeat counts only if its id sorts after it (projections/idempotence.py). NULL: none yet.
ALTER TABLE fleetward.utilization ADD COLUMN last_id text;
