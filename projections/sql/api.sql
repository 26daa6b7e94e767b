-- The HTTP read API's queries (services/api/reads.py, schemas/http.py). Each list fetches one row
-- more than the page ($limit + 1) to tell whether another page follows. Days are UTC days.

-- name: api_agents
-- Agents filtered by status ($1), last heartbeat's state ($2), team ($3), part of id or name
-- ($4), the dearest today first; $5 rows from $6.
SELECT a.agent_id, a.name, a.team, a.status, u.state, u.current_task, u.last_seen,
       coalesce(s.cost_usd, 0) AS cost_today
FROM fleet.agents a
LEFT JOIN fleet.utilization u USING (agent_id)
LEFT JOIN (SELECT agent_id, sum(cost_usd) AS cost_usd FROM fleet.spend_daily
           WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY agent_id) s
  ON s.agent_id = a.agent_id
WHERE ($1::text IS NULL OR a.status = $1)
  AND ($2::text IS NULL OR u.state = $2)
  AND ($3::text IS NULL OR a.team = $3)
  AND ($4::text IS NULL OR strpos(lower(a.agent_id || ' ' || a.name), lower($4)) > 0)
ORDER BY cost_today DESC, a.agent_id
LIMIT $5 OFFSET $6;

-- name: api_live_agents
-- What the live stream watches of every agent: its row of the agents table but last_seen and
-- cost (they change with every heartbeat and spend, which the stream does not repeat).
SELECT a.agent_id, a.name, a.team, a.status, u.state, u.current_task
FROM fleet.agents a LEFT JOIN fleet.utilization u USING (agent_id);

-- name: api_agent_rows
-- The agents table's rows of the agents in $1 (for the live stream).
SELECT a.agent_id, a.name, a.team, a.status, u.state, u.current_task, u.last_seen,
       coalesce((SELECT sum(cost_usd) FROM fleet.spend_daily s WHERE s.agent_id = a.agent_id
                 AND s.day = (now() AT TIME ZONE 'UTC')::date), 0) AS cost_today
FROM fleet.agents a LEFT JOIN fleet.utilization u USING (agent_id)
WHERE a.agent_id = ANY($1::text[]);

-- name: api_agent_events
-- Agent $1's recent events (at most $2, the latest first), from the views that keep a time per
-- agent; each branch reads at most $2 rows of its own by an index on the agent.
SELECT e.* FROM (
  (SELECT first_at AS at, 'version' AS kind, 'version ' || version AS what, NULL::text AS task_id,
          nullif(model, '') AS detail, set_by AS by
   FROM fleet.agent_versions WHERE agent_id = $1 ORDER BY first_at DESC LIMIT $2)
  UNION ALL
  (SELECT issued_at, 'command', command, task_id, nullif(reason, ''), issued_by
   FROM fleet.commands WHERE agent_id = $1 ORDER BY issued_at DESC LIMIT $2)
  UNION ALL
  (SELECT claimed_at, 'claimed', title, task_id, 'now ' || status, assignee
   FROM fleet.tasks WHERE assignee = $1 AND claimed_at IS NOT NULL
   ORDER BY claimed_at DESC LIMIT $2)
  UNION ALL
  (SELECT done_at, 'done', title, task_id, NULL, assignee
   FROM fleet.tasks WHERE assignee = $1 AND done_at IS NOT NULL ORDER BY done_at DESC LIMIT $2)
  UNION ALL
  (SELECT started_at, 'run_started', 'run ' || run_id, task_id, NULL, agent_id
   FROM fleet.spend_runs WHERE agent_id = $1 AND started_at IS NOT NULL
   ORDER BY started_at DESC LIMIT $2)
  UNION ALL
  (SELECT finished_at, 'run_finished', 'run ' || run_id || ' ' || coalesce(outcome, ''), task_id,
          '$' || cost_usd::text, agent_id
   FROM fleet.spend_runs WHERE agent_id = $1 AND finished_at IS NOT NULL
   ORDER BY finished_at DESC LIMIT $2)
  UNION ALL
  (SELECT submitted_at, 'submitted', 'deliverable v' || version || ' (' || kind || ')', task_id,
          NULL, agent_id
   FROM fleet.deliverables WHERE agent_id = $1 ORDER BY submitted_at DESC LIMIT $2)
  UNION ALL
  (SELECT raised_at, 'escalation', reason || ' (' || tier || ')', task_id, message, raised_by
   FROM fleet.escalations WHERE agent_id = $1 ORDER BY raised_at DESC LIMIT $2)
  UNION ALL
  (SELECT resolved_at, 'escalation_resolved', reason, task_id, resolution, resolved_by
   FROM fleet.escalations WHERE agent_id = $1 AND resolved_at IS NOT NULL
   ORDER BY resolved_at DESC LIMIT $2)
  UNION ALL
  (SELECT requested_at, 'approval_requested', kind || ' ' || name, task_id, summary, agent_id
   FROM fleet.approvals WHERE agent_id = $1 ORDER BY requested_at DESC LIMIT $2)
  UNION ALL
  (SELECT decided_at, 'approval_decided', kind || ' ' || name || ' ' || state, task_id, reason,
          decided_by
   FROM fleet.approvals WHERE agent_id = $1 AND decided_at IS NOT NULL
   ORDER BY decided_at DESC LIMIT $2)
  UNION ALL
  (SELECT at, 'policy_violation', kind || ' ' || tool, task_id, detail, agent_id
   FROM fleet.policy_violations WHERE agent_id = $1 ORDER BY at DESC LIMIT $2)
) e
ORDER BY e.at DESC, e.kind
LIMIT $2;

-- name: api_agent_known
-- 1 when agent $1 is in the registry (else no row: the agent routes answer 404).
SELECT 1 FROM fleet.agents WHERE agent_id = $1;

-- name: api_live_tasks
-- What the live stream watches of every task (whether it still waits on a dependency too: the
-- board shows it).
SELECT task_id, status, assignee, priority, project, waiting_on_dependencies FROM fleet.tasks;

-- name: api_live_escalations
-- What the live stream watches of every escalation raised or changed in the last day, and of
-- every one still open.
SELECT escalation_id, tier, state, reason, agent_id, task_id, message, raised_at, tier_at
FROM fleet.escalations
WHERE open OR updated_at > now() - interval '1 day';

-- name: api_tasks
-- Tasks filtered by status ($1), project ($2), priority ($3), assignee ($4); open first, by
-- priority then age; $5 rows from $6.
SELECT task_id, project, title, priority, status, assignee, claim_epoch, depends_on,
       waiting_on_dependencies, review_rounds, updated_at,
       coalesce((SELECT s.cost_usd FROM fleet.spend_tasks s WHERE s.task_id = t.task_id), 0)
         AS cost_usd
FROM fleet.tasks t
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR project = $2)
  AND ($3::text IS NULL OR priority = $3)
  AND ($4::text IS NULL OR assignee = $4)
ORDER BY status IN ('done', 'cancelled'),
         array_position(ARRAY['urgent','high','medium','low'], priority), created_at, task_id
LIMIT $5 OFFSET $6;

-- name: api_task
-- One task in full, with its cost.
SELECT t.*, coalesce((SELECT s.cost_usd FROM fleet.spend_tasks s WHERE s.task_id = t.task_id), 0)
         AS cost_usd
FROM fleet.tasks t WHERE task_id = $1;

-- name: api_spend_team
-- Spend per team ($1: one team) and day from $2 to $3, the latest day first; $4 rows from $5.
SELECT team AS key, day, cost_usd, tokens_in, tokens_out FROM fleet.spend_team_daily
WHERE ($1::text IS NULL OR team = $1) AND day BETWEEN $2 AND $3
ORDER BY day DESC, cost_usd DESC, team LIMIT $4 OFFSET $5;

-- name: api_spend_agent
-- Spend per agent ($1: one agent) and day (over the teams it spent under), as above.
SELECT agent_id AS key, day, sum(cost_usd) AS cost_usd, sum(tokens_in) AS tokens_in,
       sum(tokens_out) AS tokens_out
FROM fleet.spend_daily
WHERE ($1::text IS NULL OR agent_id = $1) AND day BETWEEN $2 AND $3
GROUP BY agent_id, day
ORDER BY day DESC, cost_usd DESC, agent_id LIMIT $4 OFFSET $5;

-- name: api_spend_project
-- Spend per project ($1: one project) and day, as above (null: tasks the board does not know).
SELECT project AS key, day, cost_usd, tokens_in, tokens_out FROM fleet.spend_project_daily
WHERE ($1::text IS NULL OR project = $1) AND day BETWEEN $2 AND $3
ORDER BY day DESC, cost_usd DESC, project LIMIT $4 OFFSET $5;

-- name: api_spend_model
-- Spend per model ($1: one model) and day, as above (tool calls name no model).
SELECT model AS key, day, cost_usd, tokens_in, tokens_out FROM fleet.spend_model_daily
WHERE ($1::text IS NULL OR model = $1) AND day BETWEEN $2 AND $3
ORDER BY day DESC, cost_usd DESC, model LIMIT $4 OFFSET $5;

-- name: api_escalations
-- Escalations in state $1 ('unresolved': open or acknowledged; 'all'), tier $2, reason $3,
-- agent $4; unresolved first, the highest tier, then the oldest; $5 rows from $6.
SELECT escalation_id, reason, tier, state, agent_id, task_id, message, raised_at, tier_at,
       acknowledged_by, resolved_at
FROM fleet.escalations
WHERE ($1 = 'all' OR ($1 = 'unresolved' AND open) OR state = $1)
  AND ($2::text IS NULL OR tier = $2)
  AND ($3::text IS NULL OR reason = $3)
  AND ($4::text IS NULL OR agent_id = $4)
ORDER BY open DESC, CASE tier WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END DESC,
         raised_at, escalation_id
LIMIT $5 OFFSET $6;

-- name: api_dead_letters
-- Dead letters of projection $1 and reason $2, the latest first; $3 rows from $4.
SELECT projection, stream, seq, subject, reason, detail, stream_time, recorded_at
FROM fleet.dead_letters
WHERE ($1::text IS NULL OR projection = $1) AND ($2::text IS NULL OR reason = $2)
ORDER BY recorded_at DESC, projection, seq DESC
LIMIT $3 OFFSET $4;

-- name: api_budgets
-- Budgets in state $1 and scope $2, the nearest their limit first; $3 rows from $4.
SELECT budget_id, scope, scope_id, budget_window, limit_usd, spent_usd, reserved_usd,
       remaining_usd, state
FROM fleet.budgets
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR scope = $2)
ORDER BY array_position(ARRAY['exhausted','warning','ok'], state),
         spent_usd / nullif(limit_usd, 0) DESC NULLS FIRST, budget_id
LIMIT $3 OFFSET $4;

-- name: api_overview
-- The dashboard's head: agents by status and by state, open escalations by tier, tasks by
-- status, tasks done today (UTC) and in the last hour, spend today, dead letters.
SELECT
  (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
     (SELECT status, count(*) n FROM fleet.agents GROUP BY status) a) AS agents_by_status,
  (SELECT coalesce(jsonb_object_agg(state, n), '{}') FROM
     (SELECT coalesce(u.state, 'unknown') AS state, count(*) n FROM fleet.agents a
      LEFT JOIN fleet.utilization u USING (agent_id) WHERE a.status <> 'retired'
      GROUP BY 1) u) AS agents_by_state,
  (SELECT coalesce(jsonb_object_agg(tier, n), '{}') FROM
     (SELECT tier, count(*) n FROM fleet.escalations_open GROUP BY tier) e) AS escalations_by_tier,
  (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
     (SELECT status, count(*) n FROM fleet.tasks GROUP BY status) t) AS tasks_by_status,
  (SELECT count(*) FROM fleet.tasks WHERE status = 'done'
    AND done_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
    AS tasks_done_today,
  (SELECT count(*) FROM fleet.tasks WHERE status = 'done'
    AND done_at >= now() - interval '1 hour') AS tasks_done_last_hour,
  (SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily
    WHERE day = (now() AT TIME ZONE 'UTC')::date) AS spend_today_usd,
  (SELECT count(*) FROM fleet.dead_letters) AS dead_letters;

-- name: api_checkpoints
-- The projections' checkpoints: the live stream reads the views again only when one moved.
SELECT coalesce(array_agg(checkpoint ORDER BY projection), '{}') AS at FROM fleet.projections;
