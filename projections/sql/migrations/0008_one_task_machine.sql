-- Every intent takes effect or fails visibly (issue 12): one task state machine, the board's
-- verdicts and inbox commands published through an outbox.

-- The task state machine (projections/tasks.py `step`): the current claim's event id, what a
-- verdict voiding the current claim (undo_status, undo_assignee) or the last agent review
-- (undo_event, undo_verdict) would restore.
DROP VIEW fleet.tasks;
ALTER TABLE fleetward.tasks
    ADD COLUMN claim_id      text,               -- event id of the current claim
    ADD COLUMN undo_event    text,               -- the claim or agent review a verdict may void
    ADD COLUMN undo_status   text,               -- the status before it
    ADD COLUMN undo_assignee text,               -- the assignee before it
    ADD COLUMN undo_verdict  text,               -- for a review: its verdict
    ADD COLUMN overruled     text;               -- the board overruled this claim or review;
                                                 -- its verdict is not stored yet

-- The tasks each agent holds, and those assigned to it (retiring an agent revokes them).
ALTER TABLE fleetward.task_agents
    ADD COLUMN held_tasks     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN assigned_tasks text[] NOT NULL DEFAULT '{}';
UPDATE fleetward.task_agents a SET
    held_tasks = coalesce(
        (SELECT array_agg(t.task_id ORDER BY t.task_id) FROM fleetward.tasks t
          WHERE t.assignee = a.agent_id AND t.status IN ('in_progress', 'blocked')), '{}'),
    assigned_tasks = coalesce(
        (SELECT array_agg(t.task_id ORDER BY t.task_id) FROM fleetward.tasks t
          WHERE t.assignee = a.agent_id AND t.status = 'assigned'), '{}');

-- A dependency that was cancelled is a dead end, not a wait: `cancelled_dependencies` names
-- them, and `waiting_on_dependencies` stays true (the task cannot be claimed). A dependency
-- done by a review the board has overruled (its verdict not stored yet) is not done either.
CREATE VIEW fleet.tasks AS
    SELECT t.task_id, t.project, t.title, t.description, t.priority, t.status, t.assignee,
           t.claim_epoch, t.lease_s, t.depends_on,
           EXISTS (SELECT 1 FROM unnest(t.depends_on) AS d(task_id)
                   LEFT JOIN fleetward.tasks dep ON dep.task_id = d.task_id
                   WHERE dep.status IS DISTINCT FROM 'done' OR dep.overruled IS NOT NULL)
               AS waiting_on_dependencies,
           ARRAY(SELECT d.task_id FROM unnest(t.depends_on) AS d(task_id)
                 JOIN fleetward.tasks dep ON dep.task_id = d.task_id
                 WHERE dep.status = 'cancelled' ORDER BY d.task_id) AS cancelled_dependencies,
           t.required_role, t.sla_s, t.review_rounds, t.rework_count, t.deliverable_version,
           t.blocked_reason, t.created_by, t.created_at, t.updated_at, t.claimed_at,
           t.submitted_at, t.done_at, t.last_progress_at, t.claim_id
    FROM fleetward.tasks t;

-- The outbox: events a projection's fold emits (verdicts on task subjects, commands to agents'
-- inboxes), stored in the transaction that applies their cause, published by the projector
-- (services/projector/outbox.py) with Nats-Msg-Id = event_id, then marked published. Kept:
-- a rebuild emits the same ids again, and finds them here.
CREATE TABLE fleetward.outbox (
    n            bigserial PRIMARY KEY,          -- publishing order
    event_id     text NOT NULL UNIQUE,
    subject      text NOT NULL,
    data         bytea NOT NULL,
    source       text NOT NULL,                  -- the projection that emitted it
    source_seq   bigint NOT NULL,                -- the stream sequence of its cause
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON fleetward.outbox (n) WHERE published_at IS NULL;

-- The outbox's ids are derived from the cause's id and stream sequence with this secret, so no
-- publisher can store a message under an id the board will use (the stream would take the
-- board's verdict for a duplicate); the same on every rebuild.
CREATE TABLE fleetward.outbox_secret (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    secret   text NOT NULL
);
INSERT INTO fleetward.outbox_secret (secret) VALUES (gen_random_uuid()::text);

-- Events applied before the outbox existed emit nothing when a rebuild folds them again.
CREATE TABLE fleetward.outbox_horizon (
    source text PRIMARY KEY,
    seq    bigint NOT NULL
);
INSERT INTO fleetward.outbox_horizon (source, seq)
    SELECT projection, seq FROM fleetward.checkpoints WHERE seq > 0;

CREATE VIEW fleet.outbox AS
    SELECT event_id, subject, source, source_seq, created_at, published_at
    FROM fleetward.outbox;
