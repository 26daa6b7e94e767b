-- Named queries of `make bench` (tests/bench/run.py): its baseline tables and the probe.

-- name: bench_copy_create
-- The raw COPY baseline: one narrow row per event.
DROP TABLE IF EXISTS bench_copy;
CREATE TABLE bench_copy (agent_id text, at timestamptz, status text);

-- name: bench_copy_drop
-- Remove the COPY baseline's table.
DROP TABLE bench_copy;

-- name: bench_agents_create
-- The one-UPDATE-per-event baseline: one row per agent, as a REST-and-database design keeps.
DROP TABLE IF EXISTS bench_agents;
CREATE TABLE bench_agents (agent_id text PRIMARY KEY, last_seen timestamptz, status text);

-- name: bench_agents_update
-- Record one heartbeat the way that design does: one statement per event.
UPDATE bench_agents SET last_seen = $2, status = $3 WHERE agent_id = $1;

-- name: bench_commit_on
-- The UPDATE baseline as a REST-and-database service runs it: each commit durable (the default).
SET synchronous_commit = on;

-- name: bench_commit_off
-- The UPDATE baseline with Fleetward's own setting, for context.
SET synchronous_commit = off;

-- name: bench_agents_drop
-- Remove the UPDATE baseline's table.
DROP TABLE bench_agents;

-- name: bench_probe
-- The freshness probe: the message of the probe agent's last heartbeat, as the view shows it.
SELECT message FROM fleet.utilization WHERE agent_id = 'probe';

-- name: kpi_triggers_off
-- The KPI rollup triggers off (migrations 0035, 0040): the pipeline section's ingest without
-- them, for their cost (the rollups are wrong until the next reset empties them).
ALTER TABLE fleetward.kpi_daily DISABLE TRIGGER kpi_runs_added;
ALTER TABLE fleetward.kpi_daily DISABLE TRIGGER kpi_runs_changed;
ALTER TABLE fleetward.kpi_daily DISABLE TRIGGER kpi_runs_removed;
ALTER TABLE fleetward.kpi_latency_daily DISABLE TRIGGER kpi_latency_added;
ALTER TABLE fleetward.kpi_latency_daily DISABLE TRIGGER kpi_latency_changed;
ALTER TABLE fleetward.kpi_latency_daily DISABLE TRIGGER kpi_latency_removed;
ALTER TABLE fleetward.deliverables DISABLE TRIGGER kpi_reviews_rows;
ALTER TABLE fleetward.utilization_hourly DISABLE TRIGGER utilization_daily_rows;
ALTER TABLE fleetward.utilization_daily DISABLE TRIGGER kpi_time_rows;
ALTER TABLE fleetward.agents DISABLE TRIGGER kpi_team_time_added;
ALTER TABLE fleetward.agents DISABLE TRIGGER kpi_team_time_moved;

-- name: kpi_triggers_on
-- The KPI rollup triggers on again (as migrations 0035 and 0040 leave them).
ALTER TABLE fleetward.kpi_daily ENABLE TRIGGER kpi_runs_added;
ALTER TABLE fleetward.kpi_daily ENABLE TRIGGER kpi_runs_changed;
ALTER TABLE fleetward.kpi_daily ENABLE TRIGGER kpi_runs_removed;
ALTER TABLE fleetward.kpi_latency_daily ENABLE TRIGGER kpi_latency_added;
ALTER TABLE fleetward.kpi_latency_daily ENABLE TRIGGER kpi_latency_changed;
ALTER TABLE fleetward.kpi_latency_daily ENABLE TRIGGER kpi_latency_removed;
ALTER TABLE fleetward.deliverables ENABLE TRIGGER kpi_reviews_rows;
ALTER TABLE fleetward.utilization_hourly ENABLE TRIGGER utilization_daily_rows;
ALTER TABLE fleetward.utilization_daily ENABLE TRIGGER kpi_time_rows;
ALTER TABLE fleetward.agents ENABLE TRIGGER kpi_team_time_added;
ALTER TABLE fleetward.agents ENABLE TRIGGER kpi_team_time_moved;

-- name: kpis_empty
-- The KPI benchmark's history gone, for the next run's (one table a statement: emptying a
-- source empties its rollups, by trigger).
TRUNCATE fleetward.utilization_hourly;
TRUNCATE fleetward.utilization_daily;
TRUNCATE fleetward.agents, fleetward.agent_versions, fleetward.kpi_daily,
         fleetward.kpi_latency_daily, fleetward.deliverables, fleetward.utilization;
TRUNCATE fleetward.kpi_cumulative;

-- name: kpis_kept
-- The KPI history already here (make bench --kpi-home): its agents, its days, and whether its
-- last day is today (the views' windows end today).
SELECT (SELECT count(*) FROM fleetward.agents) AS agents,
       (SELECT max(day) - min(day) + 1 FROM fleetward.kpi_daily) AS days,
       coalesce((SELECT max(day) FROM fleetward.kpi_daily)
                = (now() AT TIME ZONE 'UTC')::date, false) AS ends_today;

-- name: kpis_patterns
-- The KPI benchmark's scratch tables (agent-days folded by projections/kpis.py) and the function
-- that stamps them onto every agent and day (kpis_history): this session's only.
DROP TABLE IF EXISTS bench_kpi_patterns, bench_kpi_buckets;
CREATE TEMP TABLE bench_kpi_patterns (
    p int, runs_started bigint, runs bigint, runs_succeeded bigint, runs_failed bigint,
    latency_ms numeric, model_cost_usd numeric, tool_cost_usd numeric, tool_calls bigint,
    tool_errors bigint, tool_ms numeric);
CREATE TEMP TABLE bench_kpi_buckets (p int, le_ms numeric, runs bigint);
CREATE OR REPLACE FUNCTION pg_temp.bench_kpi_history(agents int, days int, patterns int, team_size int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    first date := (now() AT TIME ZONE 'UTC')::date - days + 1;
    n bigint;
    total bigint := 0;
BEGIN
    -- a bulk load: the rollup triggers stay off, the rollups are summed once at the end
    PERFORM set_config('session_replication_role', 'replica', true);
    CREATE TEMP TABLE bench_agent_days ON COMMIT DROP AS
        SELECT 'agent-' || lpad(i::text, 6, '0') AS agent_id,
               'team-' || lpad((i / team_size)::text, 4, '0') AS team, i, d, first + d AS day,
               CASE WHEN d < days / 2 THEN '1' ELSE '2' END AS version,
               (i * 7 + d) % patterns AS p
        FROM generate_series(0, agents - 1) i, generate_series(0, days - 1) d;
    INSERT INTO fleetward.agents (agent_id, name, owner, team, purpose, risk_class, version,
        status, status_reason, heartbeat_interval_s, roles, max_concurrent_tasks, registered_at,
        updated_at, last_seq)
    SELECT agent_id, agent_id, 'bench', team, '', 'medium', '2', 'active', '', 60, '{worker}', 1,
           first::timestamp AT TIME ZONE 'UTC', now(), i
    FROM bench_agent_days WHERE d = 0;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    INSERT INTO fleetward.agent_versions (agent_id, version, prompt, model, tools, notes, set_by,
        first_at, changed_at)
    SELECT agent_id, v, 'p' || v, 'm', '{}', '', agent_id, t, t
    FROM bench_agent_days,
         LATERAL (VALUES ('1', first::timestamp AT TIME ZONE 'UTC'),
                         ('2', (first + days / 2)::timestamp AT TIME ZONE 'UTC')) x(v, t)
    WHERE d = 0;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    INSERT INTO fleetward.kpi_daily
    SELECT a.agent_id, a.day, a.team, a.version, k.runs_started, k.runs, k.runs_succeeded,
           k.runs_failed, k.latency_ms, k.model_cost_usd, k.tool_cost_usd, k.tool_calls,
           k.tool_errors, k.tool_ms
    FROM bench_agent_days a JOIN bench_kpi_patterns k ON k.p = a.p;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    INSERT INTO fleetward.kpi_latency_daily
    SELECT a.agent_id, a.day, a.team, a.version, b.le_ms, b.runs
    FROM bench_agent_days a JOIN bench_kpi_buckets b ON b.p = a.p;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    INSERT INTO fleetward.deliverables (task_id, version, agent, epoch, kind, sha256, content,
        submitted_at, seq, agent_version, team, verdict, reviewed_by, reviewed_at)
    SELECT 'task-' || i || '-' || d, 1, agent_id, 1, 'markdown', repeat('0', 64), '',
           (day + interval '12 hours') AT TIME ZONE 'UTC', i * days + d, version, team,
           CASE WHEN (i + d) % 5 = 0 THEN 'reject' ELSE 'approve' END, 'user:bench',
           (day + interval '13 hours') AT TIME ZONE 'UTC'
    FROM bench_agent_days;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- the views read utilization by day (utilization_daily: 24 half-busy hours a day); the
    -- 720 hourly rows of an agent's 30 days would change nothing they read
    INSERT INTO fleetward.utilization_daily (agent_id, day, busy_s, idle_s)
    SELECT agent_id, day, 43200, 43200 FROM bench_agent_days;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    -- and each agent's current hour, half busy so far (fleetward.utilization, as heartbeats
    -- leave it)
    INSERT INTO fleetward.utilization (agent_id, state, message, first_seen, last_seen, busy_us,
        idle_us, heartbeats, last_seq, hour, hour_busy_us, hour_idle_us, hour_heartbeats)
    SELECT agent_id, 'busy', '', first::timestamp AT TIME ZONE 'UTC', now(), 0, 0, 60, i,
           date_trunc('hour', now(), 'UTC'), 900000000, 900000000, 60
    FROM bench_agent_days WHERE d = 0;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    PERFORM set_config('session_replication_role', 'origin', true);
    PERFORM fleetward.kpi_cumulative_fill();
    RETURN total;
END $$;

-- name: kpis_history
-- The KPI benchmark's history: $1 agents in teams of $4 over the last $2 UTC days, each
-- agent-day one of the $3 folded patterns (kpis_patterns); the rows written.
SELECT pg_temp.bench_kpi_history($1, $2, $3, $4);

-- name: dashboard_fleet
-- The dashboard benchmark's fleet, straight into the projections' tables: $1 agents in teams of
-- 100 (9 in 10 active, then paused, offline, retired), each with a last heartbeat and 30 UTC days
-- of spend; an open critical escalation per offline agent, a warning for 1 in 30 agents and 20
-- resolved ones per 100 agents; 2 tasks per agent (a fifth of them done, half of those today);
-- a daily budget per team and one for the organisation. The rows written.
WITH a AS (
    INSERT INTO fleetward.agents (agent_id, name, owner, team, purpose, risk_class, version,
        status, status_reason, heartbeat_interval_s, roles, max_concurrent_tasks, registered_at,
        updated_at, last_seq)
    SELECT format('agent-%s', lpad(i::text, 6, '0')), format('Agent %s', i), 'bench',
           format('team-%s', lpad((i / 100)::text, 4, '0')), '', 'medium', '1',
           CASE WHEN i % 100 < 90 THEN 'active' WHEN i % 100 < 95 THEN 'paused'
                WHEN i % 100 < 99 THEN 'offline' ELSE 'retired' END,
           '', 30, '{worker}', 1, now() - interval '40 days', now(), i
    FROM generate_series(0, $1 - 1) i RETURNING agent_id, status
), u AS (
    INSERT INTO fleetward.utilization (agent_id, state, current_task, message, first_seen,
        last_seen, busy_us, idle_us, heartbeats, last_seq, hour, hour_busy_us, hour_idle_us,
        hour_heartbeats)
    SELECT agent_id, (ARRAY['idle','busy','waiting','error'])[1 + abs(hashtext(agent_id)) % 4],
           NULL, '', now() - interval '40 days',
           now() - CASE WHEN status = 'offline' THEN interval '1 hour' ELSE interval '10 s' END,
           1000000, 1000000, 100, 1, date_trunc('hour', now(), 'UTC'), 0, 0, 0
    FROM a RETURNING 1
), s AS (
    INSERT INTO fleetward.spend_daily (agent_id, day, team, model_cost_usd, tool_cost_usd,
        tokens_in, tokens_out, runs, runs_failed, tool_calls, tool_errors, spend_events)
    SELECT format('agent-%s', lpad(i::text, 6, '0')), (now() AT TIME ZONE 'UTC')::date - d,
           format('team-%s', lpad((i / 100)::text, 4, '0')), 0.01 * (1 + (i + d) % 50), 0.001,
           9000, 2000, 10, 1, 10, 0, 10
    FROM generate_series(0, $1 - 1) i, generate_series(0, 29) d RETURNING 1
), e AS (
    INSERT INTO fleetward.escalations (escalation_id, reason, tier, state, agent, message,
        evidence, raised_by, raised_at, tier_at, resolved_by, resolved_at, events, updated_at,
        last_seq)
    SELECT format('esc-%s', i), 'heartbeat_missed',
           CASE WHEN i % 100 BETWEEN 95 AND 98 THEN 'critical' ELSE 'warning' END,
           CASE WHEN i % 100 BETWEEN 95 AND 98 OR i % 30 = 0 THEN 'open' ELSE 'resolved' END,
           format('agent-%s', lpad((i % $1)::text, 6, '0')), 'no heartbeat', '{}',
           'svc:watchdog', now() - interval '2 hours', now() - interval '1 hour',
           CASE WHEN i % 100 BETWEEN 95 AND 98 OR i % 30 = 0 THEN NULL ELSE 'svc:watchdog' END,
           CASE WHEN i % 100 BETWEEN 95 AND 98 OR i % 30 = 0 THEN NULL ELSE now() END,
           1, now(), i
    FROM generate_series(0, $1 - 1) i
    WHERE i % 100 BETWEEN 95 AND 98 OR i % 30 = 0 OR i % 5 = 1 RETURNING 1
), t AS (
    INSERT INTO fleetward.tasks (task_id, project, title, description, priority, status,
        assignee, claim_epoch, depends_on, review_rounds, rework_count, deliverable_version,
        created_by, created_at, updated_at, done_at, last_seq)
    SELECT format('task-%s', i), format('project-%s', i % 20), format('Task %s', i), '',
           (ARRAY['urgent','high','medium','low'])[1 + i % 4],
           (ARRAY['inbox','assigned','in_progress','blocked','review','done','done','done',
                  'done','cancelled'])[1 + i % 10],
           CASE WHEN i % 10 = 0 THEN NULL ELSE format('agent-%s', lpad((i % $1)::text, 6, '0')) END,
           1, '{}', 0, 0, 0, 'user:bench', now() - interval '3 days', now(),
           CASE WHEN i % 10 BETWEEN 5 AND 8 THEN now() - (i % 2) * interval '2 days' END, i
    FROM generate_series(0, 2 * $1 - 1) i RETURNING 1
), b AS (
    INSERT INTO fleetward.budgets (budget_id, scope, scope_id, budget_window, limit_usd, warn_at,
        set_by, set_at, created_at, last_seq)
    SELECT format('budget-%s', i), CASE WHEN i < 0 THEN 'org' ELSE 'team' END,
           CASE WHEN i < 0 THEN 'org' ELSE format('team-%s', lpad(i::text, 4, '0')) END, 'day',
           CASE WHEN i < 0 THEN 100000 ELSE 5 + i % 40 END, 0.8, 'user:bench', now(), now(), 1
    FROM generate_series(-1, ($1 - 1) / 100) i RETURNING 1
)
SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM u) + (SELECT count(*) FROM s)
     + (SELECT count(*) FROM e) + (SELECT count(*) FROM t) + (SELECT count(*) FROM b);
