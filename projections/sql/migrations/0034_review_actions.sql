-- The lifecycle review's actions (issue 16, part 4): a promotion is a tag on the agent that
-- every team sees in the registry (`agent.promoted`: who, when, which version, why; null when
-- never promoted or withdrawn), and a rollback (`agent.version_changed` with `rollback`) says
-- who put a version in force again and when. Both start empty: earlier history holds neither.

ALTER TABLE fleetward.agents
    ADD COLUMN promoted_by      text,
    ADD COLUMN promoted_at      timestamptz,
    ADD COLUMN promoted_version text,
    ADD COLUMN promotion_reason text;

ALTER TABLE fleetward.agent_versions
    ADD COLUMN rolled_back_by text,
    ADD COLUMN rolled_back_at timestamptz;

CREATE OR REPLACE VIEW fleet.agents AS
    SELECT agent_id, name, owner, team, purpose, risk_class, version, status, status_reason,
           heartbeat_interval_s, roles, max_concurrent_tasks, registered_at, updated_at,
           paused_by, registered_by, promoted_by, promoted_at, promoted_version, promotion_reason
    FROM fleetward.agents;

CREATE OR REPLACE VIEW fleet.agent_versions AS
    SELECT agent_id, version, prompt, model, tools, notes, set_by, first_at, changed_at,
           rolled_back_by, rolled_back_at
    FROM fleetward.agent_versions;
