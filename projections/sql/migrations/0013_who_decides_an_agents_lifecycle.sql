-- Who may change an agent's lifecycle (issue 13, DESIGN 3.7; projections/lifecycle.py): an
-- agent lifts only a pause it made itself, never leaves retirement on its own, and keeps the
-- roles and task limit of the person or service that registered it. Every reader of agent
-- events (registry, board, spend) keeps what the rule needs.
--
-- Rows from before this migration do not know who paused or registered an agent (null): a
-- paused agent is then resumed only by a person or a service (an unknown pause is not its own),
-- and an agent's own registration still sets its roles until a person or a service registers
-- it. Rebuild the projections agents, tasks and spend (`fleetward projections rebuild NAME`) to
-- fill both from the stream.

ALTER TABLE fleetward.agents
    ADD COLUMN paused_by     text,   -- the actor whose pause is in force (status paused)
    ADD COLUMN registered_by text;   -- the person or service that registered it last, if any

ALTER TABLE fleetward.task_agents
    ADD COLUMN paused_by     text,
    ADD COLUMN registered_by text,
    -- the board keeps an agent from its first lifecycle event on (a pause or a retirement
    -- before it registered holds once it registers); it may claim only once registered
    ADD COLUMN registered    boolean NOT NULL DEFAULT true;
ALTER TABLE fleetward.task_agents ALTER COLUMN registered DROP DEFAULT;

ALTER TABLE fleetward.spend_agents ADD COLUMN paused_by text;

CREATE OR REPLACE VIEW fleet.agents AS
    SELECT agent_id, name, owner, team, purpose, risk_class, version, status, status_reason,
           heartbeat_interval_s, roles, max_concurrent_tasks, registered_at, updated_at,
           paused_by, registered_by
    FROM fleetward.agents;
