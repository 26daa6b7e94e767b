-- Every admitted value fits (issue 11). The contract (schemas/bounds.py) bounds each event's
-- values to the columns they land in; what projections add up over many events gets a type that
-- cannot overflow:
-- - spend token sums become numeric: one spend brings at most 1e9 tokens, a day's sum has no bound;
-- - counters of events on one subject become bigint (review rounds, reworks, deliverable
--   versions, tasks held, events per escalation): a loop of reviews or re-raises could pass
--   2^31 in days, never 2^63 (no stream holds that many events).
-- Spend keeps the team it was spent under: one row per agent, day and team, and each agent's
-- teams with rows (spend_agents.teams), so the rows an event may add to are known before a batch
-- is folded. The views depending on altered columns are recreated exactly as they were.
-- Rows stamped before this migration keep their team: rebuild the projection `spend` to re-stamp
-- days on which an agent changed team.

-- ---- spend ------------------------------------------------------------------------------------

DROP VIEW fleet.spend_team_daily;
DROP VIEW fleet.spend_daily;

ALTER TABLE fleetward.spend_daily
    ALTER COLUMN tokens_in TYPE numeric,
    ALTER COLUMN tokens_out TYPE numeric,
    DROP CONSTRAINT spend_daily_pkey,
    ADD PRIMARY KEY (agent_id, day, team);

-- teams in code point order (COLLATE "C"), as the fold sorts them
ALTER TABLE fleetward.spend_agents ADD COLUMN teams text[];
UPDATE fleetward.spend_agents a
   SET teams = ARRAY(SELECT DISTINCT d.team COLLATE "C" FROM fleetward.spend_daily d
                      WHERE d.agent_id = a.agent_id ORDER BY 1);
INSERT INTO fleetward.spend_agents (agent_id, team, teams)
SELECT d.agent_id, 'unassigned', array_agg(DISTINCT d.team COLLATE "C" ORDER BY d.team COLLATE "C")
  FROM fleetward.spend_daily d
 WHERE NOT EXISTS (SELECT 1 FROM fleetward.spend_agents a WHERE a.agent_id = d.agent_id)
 GROUP BY d.agent_id;
ALTER TABLE fleetward.spend_agents ALTER COLUMN teams SET NOT NULL;

CREATE VIEW fleet.spend_daily AS
    SELECT agent_id, team, day, model_cost_usd + tool_cost_usd AS cost_usd, model_cost_usd,
           tool_cost_usd, tokens_in, tokens_out, runs, runs_failed, tool_calls, tool_errors
    FROM fleetward.spend_daily;

CREATE VIEW fleet.spend_team_daily AS
    SELECT team, day, sum(model_cost_usd + tool_cost_usd) AS cost_usd,
           sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(runs) AS runs,
           count(DISTINCT agent_id) AS agents
    FROM fleetward.spend_daily GROUP BY team, day;

-- ---- task board -------------------------------------------------------------------------------
-- claim_epoch and deliverables.epoch stay integer: they hold an admitted epoch, which the
-- contract bounds to 2^31-1, and are never added to.

DROP VIEW fleet.tasks;
DROP VIEW fleet.deliverables;

ALTER TABLE fleetward.tasks
    ALTER COLUMN review_rounds TYPE bigint,
    ALTER COLUMN rework_count TYPE bigint,
    ALTER COLUMN deliverable_version TYPE bigint;
ALTER TABLE fleetward.deliverables ALTER COLUMN version TYPE bigint;
ALTER TABLE fleetward.task_agents ALTER COLUMN held TYPE bigint;

CREATE VIEW fleet.tasks AS
    SELECT t.task_id, t.project, t.title, t.description, t.priority, t.status, t.assignee,
           t.claim_epoch, t.lease_s, t.depends_on,
           EXISTS (SELECT 1 FROM unnest(t.depends_on) AS d(task_id)
                   LEFT JOIN fleetward.tasks dep ON dep.task_id = d.task_id
                   WHERE dep.status IS DISTINCT FROM 'done') AS waiting_on_dependencies,
           t.required_role, t.sla_s, t.review_rounds, t.rework_count, t.deliverable_version,
           t.blocked_reason, t.created_by, t.created_at, t.updated_at, t.claimed_at,
           t.submitted_at, t.done_at, t.last_progress_at
    FROM fleetward.tasks t;

CREATE VIEW fleet.deliverables AS
    SELECT task_id, version, agent, epoch, kind, sha256, uri, content, submitted_at
    FROM fleetward.deliverables;

-- ---- escalations ------------------------------------------------------------------------------

ALTER TABLE fleetward.escalations ALTER COLUMN events TYPE bigint;
