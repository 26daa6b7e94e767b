-- Named queries used by services/. Each block starts with "-- name: <name>" and a comment line.

-- name: checkpoint_init
-- Make sure a projection has a checkpoint row.
INSERT INTO fleetward.checkpoints (projection, stream) VALUES ($1, $2)
ON CONFLICT (projection) DO NOTHING;

-- name: checkpoint_get
-- The last stream sequence a projection applied.
SELECT seq FROM fleetward.checkpoints WHERE projection = $1;

-- name: checkpoint_lock
-- The checkpoint, locked for the rest of the transaction (one writer per batch).
SELECT seq FROM fleetward.checkpoints WHERE projection = $1 FOR UPDATE;

-- name: checkpoint_advance
-- Compare-and-set: move the checkpoint from the value the writer read to the batch's last sequence.
UPDATE fleetward.checkpoints SET seq = $3, updated_at = now()
WHERE projection = $1 AND seq = $2;

-- name: checkpoint_reset
-- Start a projection over from the beginning of its stream, and its heartbeat partitions
-- ($1_p<i>of<n>: their runners, failing their compare-and-set, re-position and skip what the
-- rebuild counted).
UPDATE fleetward.checkpoints SET seq = 0, updated_at = now()
WHERE projection = $1 OR projection ~ ('^' || $1 || '_p[0-9]+of[0-9]+$');

-- name: dead_letter_insert
-- Record an event a projection could not accept (kept once per projection and sequence).
INSERT INTO fleetward.dead_letters (projection, stream, seq, subject, reason, detail, raw, stream_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING;

-- name: dead_letters_clear
-- Forget a projection's dead letters (before a rebuild records them again), and those of its
-- heartbeat partitions ($1_p<i>of<n>, projections/utilization.py).
DELETE FROM fleetward.dead_letters
WHERE projection = $1 OR projection ~ ('^' || $1 || '_p[0-9]+of[0-9]+$');

-- name: fleet_status
-- One-line fleet summary: agents by status, tasks by status, today's spend, open escalations.
SELECT
  (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
     (SELECT status, count(*) n FROM fleet.agents GROUP BY status) a) AS agents,
  (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
     (SELECT status, count(*) n FROM fleet.tasks GROUP BY status) t) AS tasks,
  (SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily WHERE day = current_date) AS spend_today,
  (SELECT count(*) FROM fleet.utilization WHERE last_seen > now() - interval '5 minutes') AS seen_5m,
  (SELECT count(*) FROM fleet.dead_letters) AS dead_letters,
  (SELECT count(*) FROM fleet.escalations_open) AS escalations_open,
  (SELECT count(*) FROM fleet.escalations_open WHERE tier = 'critical') AS escalations_critical;

-- name: agents_list
-- The agent registry with liveness and today's spend, busiest first.
SELECT a.agent_id, a.name, a.team, a.status, a.promoted_version, u.state, u.current_task,
       u.last_seen, coalesce(s.cost_usd, 0) AS cost_today
FROM fleet.agents a
LEFT JOIN fleet.utilization u USING (agent_id)
LEFT JOIN (SELECT agent_id, sum(cost_usd) AS cost_usd FROM fleet.spend_daily
           WHERE day = current_date GROUP BY agent_id) s ON s.agent_id = a.agent_id
ORDER BY cost_today DESC, a.agent_id
LIMIT $1;

-- name: tasks_list
-- The task board, open tasks first, by priority then age, with what each has cost so far.
SELECT task_id, project, title, priority, status, assignee, claim_epoch, waiting_on_dependencies,
       review_rounds, updated_at,
       coalesce((SELECT s.cost_usd FROM fleet.spend_tasks s WHERE s.task_id = t.task_id), 0)
         AS cost_usd
FROM fleet.tasks t
WHERE $1::text IS NULL OR status = $1
ORDER BY status IN ('done', 'cancelled'),
         array_position(ARRAY['urgent','high','medium','low'], priority), created_at
LIMIT $2;

-- name: agent_detail
-- Everything about one agent: who it is, what it does now, what it cost today, this month and
-- in total (UTC days, as fleet.spend_daily keeps them).
SELECT a.*, u.state, u.current_task, u.message, u.last_seen, u.busy_s, u.idle_s, u.utilization,
       u.tasks_done,
       (SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily s
         WHERE s.agent_id = a.agent_id AND s.day = (now() AT TIME ZONE 'UTC')::date) AS cost_today,
       (SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily s
         WHERE s.agent_id = a.agent_id
           AND s.day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS cost_month,
       (SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily s
         WHERE s.agent_id = a.agent_id) AS cost_total,
       (SELECT coalesce(sum(tokens_in + tokens_out), 0) FROM fleet.spend_daily s
         WHERE s.agent_id = a.agent_id AND s.day = (now() AT TIME ZONE 'UTC')::date) AS tokens_today,
       ARRAY(SELECT t.task_id FROM fleet.tasks t WHERE t.assignee = a.agent_id
              AND t.status IN ('in_progress', 'blocked') ORDER BY t.task_id) AS holds
FROM fleet.agents a LEFT JOIN fleet.utilization u USING (agent_id)
WHERE a.agent_id = $1;

-- name: claimable_tasks
-- Tasks an agent may claim now, those assigned to it first, then highest priority and oldest:
-- open, not held, every dependency done, its role (if any) among the agent's roles.
SELECT task_id FROM fleet.tasks
WHERE (status = 'inbox' OR (status = 'assigned' AND assignee = $1))
  AND NOT waiting_on_dependencies
  AND (required_role IS NULL OR required_role = ANY($2::text[]))
ORDER BY status = 'assigned' DESC,
         array_position(ARRAY['urgent','high','medium','low'], priority), created_at, task_id
LIMIT $3;

-- name: task_spend
-- What one task has cost so far (fleet.spend_tasks); no row when nothing was spent on it.
SELECT cost_usd, model_cost_usd, tool_cost_usd, tokens_in, tokens_out, runs, tool_calls,
       tool_errors, spend_events
FROM fleet.spend_tasks
WHERE task_id = $1;

-- name: agent_profile
-- One agent's profile and status, as the task API answers fw.api.agents.get (schemas/api.py).
SELECT agent_id, name, owner, team, status, status_reason, roles, max_concurrent_tasks,
       heartbeat_interval_s, version, risk_class, purpose, paused_by, registered_by
FROM fleet.agents
WHERE agent_id = $1;

-- name: escalations_open
-- Open escalations for people: critical first, then warning, info; the oldest first in each.
SELECT escalation_id, reason, tier, state, agent_id, task_id, message, raised_at,
       tier_at, acknowledged_by, age
FROM fleet.escalations_open
ORDER BY tier_rank DESC, raised_at, escalation_id
LIMIT $1;

-- name: escalations_all
-- Every escalation, open ones first, then the most recently raised.
SELECT escalation_id, reason, tier, state, agent_id, task_id, message, raised_at,
       tier_at, acknowledged_by, age
FROM fleet.escalations
ORDER BY open DESC, CASE tier WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END DESC,
         raised_at DESC
LIMIT $1;

-- name: watchdog_agents
-- The watchdog's start: every agent's status (and whose pause is in force), promised interval
-- and last lifecycle change.
SELECT agent_id, status, paused_by, heartbeat_interval_s, updated_at FROM fleet.agents;

-- name: watchdog_tasks
-- The watchdog's start: every open task, and every done one that a verdict of the board may
-- still send back (projections/tasks.py `reopenable`, and the board has emitted verdicts on the
-- task, on either subject form: migration 0011; an over-estimate is harmless), with the columns
-- the task state machine reads and writes (services/watchdog/core/mirror.py MIRRORED), so a
-- loaded row is the row the watchdog folds.
SELECT task_id, status, assignee, claim_epoch, lease_s, depends_on, sla_s, review_rounds,
       rework_count, deliverable_version, blocked_reason, created_at, updated_at, claimed_at,
       submitted_at, done_at, last_seq, last_progress_at, claim_id, undo_event, undo_status,
       undo_assignee, undo_verdict
FROM fleetward.tasks t
WHERE status IN ('inbox', 'assigned', 'in_progress', 'blocked', 'review')
   OR (status = 'done' AND (undo_status IS NOT NULL OR undo_event IS NOT NULL)
       AND EXISTS (SELECT 1 FROM fleetward.outbox o
                   WHERE split_part(o.subject, '.', 3) = t.task_id
                     AND o.subject LIKE 'fw.task.%'));

-- name: watchdog_ended_deps
-- The watchdog's start: the tasks open tasks depend on that are done or cancelled (a cancelled
-- one is a dead end).
SELECT DISTINCT dep.task_id, dep.status
FROM fleetward.tasks t
CROSS JOIN LATERAL unnest(t.depends_on) AS d(task_id)
JOIN fleetward.tasks dep ON dep.task_id = d.task_id
WHERE t.status IN ('inbox', 'assigned', 'in_progress', 'blocked', 'review')
  AND dep.status IN ('done', 'cancelled');

-- name: watchdog_escalations
-- The watchdog's start: open escalations with the last sequence on their subject.
SELECT escalation_id, reason, tier, agent, task, message, evidence::text AS evidence, last_seq
FROM fleetward.escalations
WHERE state <> 'resolved';

-- name: watchdog_approvals
-- The watchdog's start: open approval requests, with the columns of projections.gates.Gate.
SELECT approval_id, agent, kind, name, risk, requested_at, deadline_at, expires_at, on_expiry,
       state, decided_by, decided_at, reason, expired
FROM fleetward.approvals
WHERE state = 'open';

-- name: watchdog_checkpoints
-- The watchdog's start: how far the projections it reads have applied their streams.
SELECT projection, seq FROM fleetward.checkpoints WHERE projection = ANY($1::text[]);

-- name: metrics_agents
-- The fleetward_agents gauge: agents by status.
SELECT status, count(*)::int AS n FROM fleet.agents GROUP BY status;

-- name: metrics_tasks
-- The fleetward_tasks gauge: tasks by status and priority.
SELECT status, priority, count(*)::int AS n FROM fleet.tasks GROUP BY status, priority;

-- name: metrics_escalations
-- The fleetward_escalations_open gauge: open escalations by tier.
SELECT tier, count(*)::int AS n FROM fleet.escalations_open GROUP BY tier;

-- name: metrics_team_spend
-- Spend today ($1, a UTC day) per team of the registry: one index lookup per team on
-- spend_daily (team, day). Sums stay numeric: one past the largest float8 must fail its team's
-- row in Python, not the whole read.
SELECT t.team, coalesce(sum(s.cost_usd), 0) AS today
FROM (SELECT DISTINCT team FROM fleet.agents) t
LEFT JOIN fleet.spend_daily s ON s.team = t.team AND s.day = $1::date
GROUP BY t.team;

-- name: metrics_budgets
-- The budget gauges: every budget with what its scope spent in its current window (exact sums,
-- turned into floats row by row, as above).
SELECT budget_id, scope, budget_window, limit_usd, spent_usd, limit_tokens, spent_tokens, state
FROM fleet.budgets;

-- name: budgets_list
-- Every budget with its spend in the current window, the ones nearest their limit first.
SELECT budget_id, scope, scope_id, budget_window, limit_usd, spent_usd, reserved_usd,
       remaining_usd, limit_tokens, spent_tokens, state
FROM fleet.budgets
ORDER BY array_position(ARRAY['exhausted','warning','ok'], state), budget_id;

-- name: budget_detail
-- One budget in full (fleet.budgets).
SELECT * FROM fleet.budgets WHERE budget_id = $1;

-- name: projections_list
-- Each projection's checkpoint, for `fleetward status`.
SELECT projection, stream, checkpoint, updated_at FROM fleet.projections ORDER BY projection;

-- name: database_exists
-- Whether the embedded server already has Fleetward's database.
SELECT 1 FROM pg_database WHERE datname = $1;

-- name: outbox_insert
-- Store an event a fold emitted, unless its cause predates the outbox (a rebuild of old
-- history) or it is stored already (a rebuild, or a window applied again after a crash).
INSERT INTO fleetward.outbox (event_id, subject, data, source, source_seq)
SELECT $1, $2, $3, $4, $5
WHERE $5 > coalesce((SELECT seq FROM fleetward.outbox_horizon WHERE source = $4), 0)
ON CONFLICT (event_id) DO NOTHING;

-- name: outbox_pending
-- The oldest events not yet published, and how long each has waited (seconds).
SELECT n, event_id, subject, data, created_at,
       extract(epoch FROM now() - created_at)::double precision AS age_s
FROM fleetward.outbox
WHERE published_at IS NULL ORDER BY n LIMIT $1;

-- name: outbox_published
-- Mark events published (the stream acknowledged them).
UPDATE fleetward.outbox SET published_at = now() WHERE n = ANY($1::bigint[]);

-- name: outbox_backlog
-- How many events wait to be published, and for how long the oldest has (seconds).
SELECT count(*) AS waiting,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::double precision AS oldest_s
FROM fleetward.outbox WHERE published_at IS NULL;

-- name: outbox_secret
-- The secret the outbox's event ids are derived with (migration 0008).
SELECT secret FROM fleetward.outbox_secret;

-- name: sim_agents
-- The simulator: the registry's status of its agents ($1 agent ids).
SELECT agent_id, status, status_reason FROM fleet.agents WHERE agent_id = ANY($1::text[]);

-- name: sim_open_tasks
-- The simulator: the open tasks an earlier run left, oldest first.
SELECT task_id, status, assignee, claim_epoch, created_by, required_role, waiting_on_dependencies
FROM fleet.tasks
WHERE status IN ('inbox', 'in_progress', 'blocked', 'review')
ORDER BY created_at, task_id;

-- name: projection_checkpoints
-- The checkpoints of some projections ($1 names).
SELECT projection, checkpoint FROM fleet.projections WHERE projection = ANY($1::text[]);

-- name: guard_budgets
-- The guard's start: every budget as its latest budget.set has it (services/guard).
SELECT budget_id, scope, scope_id, budget_window, limit_usd, limit_tokens, warn_at, set_by,
       last_seq
FROM fleetward.budgets;

-- name: guard_agents
-- The guard's start: each agent's team (the one its spend counts under: spend_agents), status,
-- whose pause is in force and the status reason (which budget a pause of the guard names).
SELECT s.agent_id, s.team, coalesce(a.status, s.status) AS status,
       coalesce(a.paused_by, s.paused_by) AS paused_by, coalesce(a.status_reason, '') AS reason
FROM fleetward.spend_agents s LEFT JOIN fleetward.agents a USING (agent_id)
UNION ALL
SELECT a.agent_id, 'unassigned', a.status, a.paused_by, coalesce(a.status_reason, '')
FROM fleetward.agents a
WHERE NOT EXISTS (SELECT 1 FROM fleetward.spend_agents s WHERE s.agent_id = a.agent_id);

-- name: guard_tasks
-- The guard's start: each task's project, and who holds it while it is open.
SELECT task_id, project,
       CASE WHEN status IN ('in_progress', 'blocked', 'review') THEN assignee END AS holder
FROM fleetward.tasks;

-- name: guard_agent_spend
-- The guard's start: spend per agent and team, per UTC day from $1 on, and before $1 in one
-- row (day null). USD and tokens in and out.
SELECT agent_id, team, CASE WHEN day >= $1 THEN day END AS day,
       sum(model_cost_usd + tool_cost_usd) AS usd, sum(tokens_in + tokens_out) AS tokens
FROM fleetward.spend_daily
GROUP BY agent_id, team, CASE WHEN day >= $1 THEN day END;

-- name: guard_task_spend
-- The guard's start: spend per task (with its project, null while the board has not seen its
-- task.created), per UTC day from $1 on, and before $1 in one row (day null).
SELECT d.task_id, t.project, CASE WHEN d.day >= $1 THEN d.day END AS day,
       sum(d.model_cost_usd + d.tool_cost_usd) AS usd, sum(d.tokens_in + d.tokens_out) AS tokens
FROM fleetward.spend_task_daily d LEFT JOIN fleetward.tasks t USING (task_id)
GROUP BY d.task_id, t.project, CASE WHEN d.day >= $1 THEN d.day END;

-- name: guard_reservation_known
-- A reservation id the guard would grant: was it ever stored (its idempotency key used)?
SELECT EXISTS (SELECT 1 FROM fleetward.reservations WHERE reservation = $1);

-- name: guard_holds
-- The guard's start: the reservations open at the budgets projection's checkpoint.
SELECT budget_id, reservation, agent_id, usd, expires_at
FROM fleetward.reservations
WHERE released_reason IS NULL;

-- name: approvals_open
-- fleetward approvals: the open requests, the oldest first.
SELECT approval_id, agent_id, task_id, kind, name, summary, risk, requested_at,
       deadline_at, expires_at, overdue, policy_id, policy_version
FROM fleet.approvals WHERE open ORDER BY requested_at, approval_id LIMIT $1;

-- name: policies_list
-- fleetward policies show: every policy (or those of one scope), the most specific scope first.
SELECT policy_id, scope, scope_id, version, allow, deny, approve, default_verdict,
       max_cost_usd, set_by, set_at
FROM fleet.policies
WHERE ($1::text IS NULL OR scope = $1) AND ($2::text IS NULL OR scope_id = $2)
ORDER BY CASE scope WHEN 'agent' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, scope_id;

-- name: metrics_approvals
-- The approval gauges: open requests by age bucket, overdue ones, decisions by outcome.
SELECT count(*) FILTER (WHERE open AND age < interval '5 minutes')::int AS open_5m,
       count(*) FILTER (WHERE open AND age >= interval '5 minutes'
                        AND age < interval '1 hour')::int AS open_1h,
       count(*) FILTER (WHERE open AND age >= interval '1 hour'
                        AND age < interval '1 day')::int AS open_1d,
       count(*) FILTER (WHERE open AND age >= interval '1 day')::int AS open_older,
       count(*) FILTER (WHERE overdue)::int AS overdue,
       count(*) FILTER (WHERE state = 'granted')::bigint AS granted,
       count(*) FILTER (WHERE state = 'denied' AND NOT expired)::bigint AS denied,
       count(*) FILTER (WHERE state = 'denied' AND expired)::bigint AS expired
FROM fleet.approvals;

-- name: metrics_violations
-- The policy violation gauge: violations ever, by kind and tier.
SELECT kind, tier, count(*)::bigint AS n FROM fleet.policy_violations GROUP BY kind, tier;
-- name: audit_team_agents
-- The agents of some teams, as the registry has them now (audit export --team).
SELECT agent_id FROM fleet.agents WHERE team = ANY($1::text[]);

-- name: audit_dead_letters
-- Why the projector refused the messages of a stream between two sequences: seq, reasons.
SELECT seq, string_agg(DISTINCT reason, ',' ORDER BY reason) AS reasons
FROM fleet.dead_letters WHERE stream = $1 AND seq BETWEEN $2 AND $3 GROUP BY seq;

-- name: audit_judged_to
-- Every sequence of a stream up to this one has been judged by all of its projections.
SELECT coalesce(min(checkpoint), 0) FROM fleet.projections WHERE stream = $1;

-- name: kpis_agents
-- `fleetward kpis`: each agent's KPIs over the last $1 days (7 or 30), of team $2 (null: all).
SELECT * FROM fleet.kpi_agents
WHERE days = $1 AND ($2::text IS NULL OR team = $2)
ORDER BY team, agent_id
LIMIT $3;

-- name: kpis_teams
-- `fleetward kpis --by team`: each team's KPIs over the last $1 days, team $2 (null: all).
SELECT * FROM fleet.kpi_teams
WHERE days = $1 AND ($2::text IS NULL OR team = $2)
ORDER BY team
LIMIT $3;

-- name: kpis_versions
-- `fleetward kpis --by version`: each agent version's KPIs over the last $1 days, of the agents
-- in team $2 now (null: all).
SELECT a.team, v.* FROM fleet.kpi_versions v
JOIN fleet.agents a ON a.agent_id = v.agent_id
WHERE v.days = $1 AND ($2::text IS NULL OR a.team = $2)
ORDER BY a.team, v.agent_id, v.version
LIMIT $3;

-- name: kpis_team_known
-- Whether team $1 has an agent now, or KPIs in the last 30 days.
SELECT EXISTS (SELECT 1 FROM fleet.agents WHERE team = $1)
       OR EXISTS (SELECT 1 FROM fleet.kpi_teams WHERE team = $1);

-- name: metrics_kpi_teams
-- The KPI gauges: every team of the registry or with KPIs, in both windows (no row in
-- fleet.kpi_teams: no activity in the window, its counts 0). Sums stay numeric, as above.
SELECT t.team, p.days, k.runs, k.success_rate, k.avg_latency_ms, k.p95_latency_ms, k.cost_usd,
       k.cost_per_run_usd, k.tasks_done, k.cost_per_task_usd, k.approval_rate, k.rework_rate,
       k.tool_error_rate, k.utilization
FROM (SELECT team FROM fleet.agents UNION SELECT team FROM fleet.kpi_teams) t
CROSS JOIN (VALUES (7), (30)) AS p(days)
LEFT JOIN fleet.kpi_teams k ON k.team = t.team AND k.days = p.days;

-- name: watchdog_kpi_agents
-- The KPI drift (services/watchdog/core/drift.py): every agent not retired, its version now,
-- the one last in force before it (null: none) and when the current one was last put in force.
SELECT a.agent_id, a.version, cur.changed_at AS since,
       (SELECT v.version FROM fleetward.agent_versions v
        WHERE v.agent_id = a.agent_id AND v.version <> a.version
        ORDER BY v.changed_at DESC, v.version LIMIT 1) AS previous
FROM fleetward.agents a
LEFT JOIN fleetward.agent_versions cur ON cur.agent_id = a.agent_id AND cur.version = a.version
WHERE a.status <> 'retired';

-- name: watchdog_kpi_sums
-- The KPI drift: per agent, version and period (30: the last 30 UTC days to $1, today; cur: the
-- last 7; prev: the 7 before them) runs finished, succeeded, cost, and deliverables reviewed,
-- approved and rejected (by the review's day).
SELECT f.agent_id, f.version, p.period, sum(f.runs) AS runs, sum(f.succeeded) AS succeeded,
       sum(f.cost_usd) AS cost_usd, sum(f.approved) AS approved, sum(f.reviewed) AS reviewed,
       sum(f.rejected) AS rejected
FROM (
    SELECT k.agent_id, k.version, k.day, k.runs, k.runs_succeeded AS succeeded,
           k.model_cost_usd + k.tool_cost_usd AS cost_usd, 0 AS approved, 0 AS reviewed,
           0 AS rejected
    FROM fleetward.kpi_daily k WHERE k.day > $1::date - 30
    UNION ALL
    SELECT d.agent, coalesce(d.agent_version, ''), (d.reviewed_at AT TIME ZONE 'UTC')::date,
           0, 0, 0, (d.verdict = 'approve')::int, 1, (d.verdict = 'reject')::int
    FROM fleetward.deliverables d
    WHERE d.reviewed_at >= ($1::date - 29)::timestamp AT TIME ZONE 'UTC'
) f
CROSS JOIN LATERAL (VALUES ('30', true), ('cur', f.day > $1::date - 7),
                           ('prev', f.day > $1::date - 14 AND f.day <= $1::date - 7))
    AS p(period, inside)
WHERE p.inside
GROUP BY f.agent_id, f.version, p.period;

-- name: lease_register
-- Say which process this lease session serves (and forget the rows of sessions that ended).
WITH gone AS (
  DELETE FROM fleetward.projector_leases l
  WHERE NOT EXISTS (SELECT FROM pg_stat_activity a
                    WHERE a.pid = l.backend_pid AND a.backend_start = l.backend_start)
)
INSERT INTO fleetward.projector_leases
  (backend_pid, backend_start, durable, projections, lock_keys, host, pid)
SELECT a.pid, a.backend_start, $1, $2, $3, $4, $5
FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
ON CONFLICT (backend_pid, backend_start) DO NOTHING;

-- name: lease_try
-- Take the session-level advisory lock of every key, in order; true for each one taken.
SELECT pg_try_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i;

-- name: lease_unlock
-- Give back the session-level advisory locks of these keys (a standby keeps none of them).
SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS t(k);

-- name: lease_fence
-- How many of the advisory locks of these keys session $2 holds (the fence of every commit).
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND pid = $2 AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint) = ANY($1::bigint[]);

-- name: lease_sessions
-- The live lease sessions: the process each serves, and whether it holds all its locks.
SELECT l.durable, l.projections, l.host, l.pid, l.since,
       (SELECT count(*) FROM pg_locks k
        WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid AND k.objsubid = 1
          AND ((k.classid::bigint << 32) | k.objid::bigint) = ANY(l.lock_keys))
         = cardinality(l.lock_keys) AS active
FROM fleetward.projector_leases l
JOIN pg_stat_activity a ON a.pid = l.backend_pid AND a.backend_start = l.backend_start
ORDER BY l.durable, active DESC, l.since;

-- name: review_agents
-- `fleetward review`: every agent not retired (of team $1, null: all), its KPIs over the last 30
-- days, the last UTC day it ran or called a tool (null: never), the version it ran before the
-- one in force (null: none), its open kpi_drift escalations and their messages.
SELECT a.agent_id, a.team, a.version, a.status, a.registered_at, a.promoted_version,
       k.runs, k.success_rate, k.cost_usd, k.cost_per_run_usd, k.tasks_done, k.cost_per_task_usd,
       k.reviewed, k.rework_rate, k.tool_error_rate,
       (SELECT max(d.day) FROM fleetward.kpi_daily d
        WHERE d.agent_id = a.agent_id AND d.runs_started + d.runs + d.tool_calls > 0)
           AS last_active_day,
       (SELECT v.version FROM fleetward.agent_versions v
        WHERE v.agent_id = a.agent_id AND v.version <> a.version
        ORDER BY v.changed_at DESC, v.version LIMIT 1) AS previous_version,
       (SELECT coalesce(array_agg(e.message ORDER BY e.raised_at), '{}') FROM fleet.escalations e
        WHERE e.agent_id = a.agent_id AND e.reason = 'kpi_drift' AND e.open) AS drifts
FROM fleet.agents a
LEFT JOIN fleet.kpi_agents k ON k.agent_id = a.agent_id AND k.days = 30
WHERE a.status <> 'retired' AND ($1::text IS NULL OR a.team = $1)
ORDER BY a.team, a.agent_id;

-- name: review_rework
-- `fleetward review`: per agent (of team $2, null: all) deliverables reviewed and rejected in the
-- last 7 UTC days to $1 (today) and in the 7 before them, by the review's day.
SELECT d.agent AS agent_id,
       count(*) FILTER (WHERE d.reviewed_at >= ($1::date - 6)::timestamp AT TIME ZONE 'UTC')
           AS reviewed_now,
       count(*) FILTER (WHERE d.reviewed_at >= ($1::date - 6)::timestamp AT TIME ZONE 'UTC'
                        AND d.verdict = 'reject') AS rejected_now,
       count(*) FILTER (WHERE d.reviewed_at < ($1::date - 6)::timestamp AT TIME ZONE 'UTC')
           AS reviewed_before,
       count(*) FILTER (WHERE d.reviewed_at < ($1::date - 6)::timestamp AT TIME ZONE 'UTC'
                        AND d.verdict = 'reject') AS rejected_before
FROM fleetward.deliverables d
JOIN fleetward.agents a ON a.agent_id = d.agent
WHERE d.reviewed_at >= ($1::date - 13)::timestamp AT TIME ZONE 'UTC'
  AND ($2::text IS NULL OR a.team = $2)
GROUP BY d.agent;

-- name: review_version_ran
-- `fleetward agents rollback`: version $2 of agent $1 as it ran (null: never).
SELECT prompt, model, tools, notes FROM fleet.agent_versions WHERE agent_id = $1 AND version = $2;

-- name: review_promoted
-- `fleetward agents promote`: the version agent $1's promotion tag names (null: none).
SELECT promoted_version FROM fleet.agents WHERE agent_id = $1;

-- name: utc_today
-- Today as a UTC date, by the database's clock (the windows of the views).
SELECT (now() AT TIME ZONE 'UTC')::date;

-- name: checkpoint_claim
-- The first statement of a window commit (services/projector/commit.py ``commit_windows``):
-- the fence and every checkpoint's compare-and-set at once. Lock keys $4 (null: no lease) must
-- all be held by session $5; then projection $1[i] moves from $2[i] (the checkpoint its window
-- was folded on) to $3[i], its row locked for the rest of the transaction. Returns whether the
-- fence held and the projections that moved (none when it did not hold).
WITH fence AS (
  SELECT $4::bigint[] IS NULL OR count(*) = cardinality($4::bigint[]) AS held
  FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND pid = $5 AND objsubid = 1
    AND ((classid::bigint << 32) | objid::bigint) = ANY($4::bigint[])
), claimed AS (
  UPDATE fleetward.checkpoints c SET seq = w.last, updated_at = now()
  FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(projection, expected, last), fence
  WHERE fence.held AND c.projection = w.projection AND c.seq = w.expected
  RETURNING c.projection
)
SELECT fence.held, array(SELECT projection FROM claimed) AS claimed FROM fence;
