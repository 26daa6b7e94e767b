-- Escalations (projection `escalations`, subjects fw.esc.<id>) and their public views.

CREATE TABLE fleetward.escalations (
    escalation_id   text PRIMARY KEY,
    reason          text NOT NULL,
    tier            text NOT NULL,                 -- info, warning, critical (highest raised)
    state           text NOT NULL,                 -- open, acknowledged, resolved
    agent           text,
    task            text,
    message         text NOT NULL,
    evidence        jsonb NOT NULL,
    raised_by       text NOT NULL,
    raised_at       timestamptz NOT NULL,          -- first raise (stream time)
    tier_at         timestamptz NOT NULL,          -- when the current tier was raised
    acknowledged_by text,
    acknowledged_at timestamptz,
    ack_note        text,
    resolved_by     text,
    resolved_at     timestamptz,
    resolution      text,
    events          integer NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_seq        bigint NOT NULL                -- last stream sequence on its subject
);
CREATE INDEX ON fleetward.escalations (state, tier, raised_at);
CREATE INDEX ON fleetward.escalations (agent);
CREATE INDEX ON fleetward.escalations (task);

CREATE VIEW fleet.escalations AS
    SELECT escalation_id, reason, tier, state, state <> 'resolved' AS open, agent, task, message,
           evidence, raised_by, raised_at, tier_at, acknowledged_by, acknowledged_at, ack_note,
           resolved_by, resolved_at, resolution,
           coalesce(resolved_at, now()) - raised_at AS age,
           updated_at
    FROM fleetward.escalations;

CREATE VIEW fleet.escalations_open AS
    SELECT escalation_id, reason, tier, state, agent, task, message, evidence, raised_at, tier_at,
           acknowledged_by, acknowledged_at, now() - raised_at AS age,
           CASE tier WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END AS tier_rank
    FROM fleetward.escalations
    WHERE state <> 'resolved';
