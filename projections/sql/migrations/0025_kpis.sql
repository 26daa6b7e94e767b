-- KPIs and agent versions (issue 16, parts 1 and 2). The facts the contract carries are kept:
-- a run's latency and the time its tools took (spend_runs), each agent version's prompt, model
-- and tool set (agent_versions, projection agents), the version, team and review verdict of
-- each deliverable (deliverables, projection tasks), and daily rollups per agent, day, team and
-- version of runs, outcomes, latency, cost and tool calls (kpi_daily, kpi_latency_daily,
-- projection spend). The new columns and tables start empty: history before this migration
-- shows in them once the projections are rebuilt (`fleetward projections rebuild agents`,
-- `... tasks`, `... spend`).

CREATE TABLE fleetward.agent_versions (
    agent_id   text NOT NULL,
    version    text NOT NULL,
    prompt     text NOT NULL,                 -- '' when never said
    model      text NOT NULL,
    tools      text[] NOT NULL,
    notes      text NOT NULL,
    set_by     text NOT NULL,                 -- actor of the event that set the details
    first_at   timestamptz NOT NULL,          -- stream time it was first in force
    changed_at timestamptz NOT NULL,          -- stream time it was last put in force
    PRIMARY KEY (agent_id, version)
);

ALTER TABLE fleetward.task_agents
    ADD COLUMN team    text NOT NULL DEFAULT 'unassigned',
    ADD COLUMN version text NOT NULL DEFAULT '';

ALTER TABLE fleetward.deliverables
    ADD COLUMN agent_version text,            -- null: submitted before migration 0025
    ADD COLUMN team          text,
    ADD COLUMN verdict       text,            -- approve, reject; null until reviewed
    ADD COLUMN reviewed_by   text,
    ADD COLUMN reviewed_at   timestamptz;
CREATE INDEX ON fleetward.deliverables (reviewed_at) WHERE reviewed_at IS NOT NULL;

ALTER TABLE fleetward.spend_agents
    ADD COLUMN version  text NOT NULL DEFAULT '',
    ADD COLUMN kpi_keys text[] NOT NULL DEFAULT '{}';   -- 'team/version' of its kpi_daily rows

ALTER TABLE fleetward.spend_runs
    ADD COLUMN latency_ms numeric,             -- its last run.finished's; null while it runs
    ADD COLUMN tool_ms    numeric NOT NULL DEFAULT 0;  -- sum of its tool calls' duration_ms

CREATE TABLE fleetward.kpi_daily (
    agent_id       text NOT NULL,
    day            date NOT NULL,             -- UTC day of the stream time
    team           text NOT NULL,             -- the agent's team then (as spend_daily)
    version        text NOT NULL,             -- the agent's version then
    runs_started   bigint NOT NULL,
    runs           bigint NOT NULL,           -- run.finished
    runs_succeeded bigint NOT NULL,
    runs_failed    bigint NOT NULL,
    latency_ms     numeric NOT NULL,          -- sum over run.finished, exact
    model_cost_usd numeric NOT NULL,
    tool_cost_usd  numeric NOT NULL,
    tool_calls     bigint NOT NULL,
    tool_errors    bigint NOT NULL,
    tool_ms        numeric NOT NULL,          -- sum of tool.called duration_ms
    PRIMARY KEY (agent_id, day, team, version)
);
CREATE INDEX ON fleetward.kpi_daily (day);

CREATE TABLE fleetward.kpi_latency_daily (
    agent_id text NOT NULL,
    day      date NOT NULL,
    team     text NOT NULL,
    version  text NOT NULL,
    le_ms    numeric NOT NULL,                -- upper edge of the latency bucket (projections/kpis.py)
    runs     bigint NOT NULL,                 -- run.finished with latency in the bucket
    PRIMARY KEY (agent_id, day, team, version, le_ms)
);
CREATE INDEX ON fleetward.kpi_latency_daily (day);

CREATE VIEW fleet.agent_versions AS
    SELECT agent_id, version, prompt, model, tools, notes, set_by, first_at, changed_at
    FROM fleetward.agent_versions;

CREATE VIEW fleet.deliverable_versions AS
    SELECT d.task_id, d.version, d.agent, d.agent_version, v.prompt, v.model, v.tools,
           d.team, d.submitted_at, d.verdict, d.reviewed_by, d.reviewed_at
    FROM fleetward.deliverables d
    LEFT JOIN fleetward.agent_versions v ON v.agent_id = d.agent AND v.version = d.agent_version;

CREATE OR REPLACE VIEW fleet.spend_runs AS
    SELECT agent_id, run_id, task_id, started_at, finished_at, outcome,
           model_cost_usd + tool_cost_usd AS cost_usd, model_cost_usd, tool_cost_usd,
           tokens_in, tokens_out, tool_calls, tool_errors, spend_events, latency_ms, tool_ms
    FROM fleetward.spend_runs;

-- The windows: the last 7 and the last 30 UTC days (today included) by the stream's time.
CREATE VIEW fleetward.kpi_periods AS
    SELECT p.days, (now() AT TIME ZONE 'UTC')::date - p.days + 1 AS since
    FROM (VALUES (7), (30)) AS p(days);

-- The facts every KPI sums, one row per rollup row and period it falls in: runs, cost and
-- tool calls (kpi_daily), latency buckets (kpi_latency_daily), reviewed deliverables.
CREATE VIEW fleetward.kpi_facts AS
    SELECT k.agent_id, k.team, k.version, p.days, k.runs_started, k.runs, k.runs_succeeded,
           k.runs_failed, k.latency_ms, k.model_cost_usd + k.tool_cost_usd AS cost_usd,
           k.tool_calls, k.tool_errors, 0 AS reviewed, 0 AS approved, 0 AS rejected,
           NULL::numeric AS le_ms, 0::bigint AS le_runs
    FROM fleetward.kpi_daily k JOIN fleetward.kpi_periods p ON k.day >= p.since
    UNION ALL
    SELECT l.agent_id, l.team, l.version, p.days, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           l.le_ms, l.runs
    FROM fleetward.kpi_latency_daily l JOIN fleetward.kpi_periods p ON l.day >= p.since
    UNION ALL
    SELECT d.agent, coalesce(d.team, 'unassigned'), coalesce(d.agent_version, ''), p.days,
           0, 0, 0, 0, 0, 0, 0, 0, 1, (d.verdict = 'approve')::int, (d.verdict = 'reject')::int,
           NULL, 0
    FROM fleetward.deliverables d
    JOIN fleetward.kpi_periods p ON d.reviewed_at >= p.since::timestamp AT TIME ZONE 'UTC';

-- The nearest-rank 95th percentile of latency buckets: the upper edge of the first bucket
-- whose cumulative count reaches ceil(0.95 n); null for no runs.
CREATE FUNCTION fleetward.p95_ms(le numeric[], runs bigint[]) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT b.le FROM (
        SELECT u.le, sum(u.n) OVER (ORDER BY u.le) AS cum, sum(u.n) OVER () AS total
        FROM unnest(le, runs) AS u(le, n)
    ) b
    WHERE b.cum >= ceil(0.95 * b.total) ORDER BY b.le LIMIT 1
$$;

-- The KPIs of every agent, team and agent version and period (level says which), computed once.
CREATE VIEW fleetward.kpi_levels AS
    SELECT level, agent_id, team, version, days, runs_started, runs,
           runs_succeeded::float8 / nullif(runs, 0) AS success_rate,
           latency_ms / nullif(runs, 0) AS avg_latency_ms, p95_latency_ms,
           cost_usd, cost_usd / nullif(runs, 0) AS cost_per_run_usd,
           approved AS tasks_done, cost_usd / nullif(approved, 0) AS cost_per_task_usd,
           reviewed, approved::float8 / nullif(reviewed, 0) AS approval_rate,
           rejected::float8 / nullif(reviewed, 0) AS rework_rate,
           tool_calls, tool_errors::float8 / nullif(tool_calls, 0) AS tool_error_rate
    FROM (
        SELECT CASE WHEN GROUPING(version) = 0 THEN 'version'
                    WHEN GROUPING(team) = 0 THEN 'team' ELSE 'agent' END AS level,
               agent_id, team, version, days,
               sum(runs_started) AS runs_started, sum(runs) AS runs,
               sum(runs_succeeded) AS runs_succeeded, sum(latency_ms) AS latency_ms,
               sum(cost_usd) AS cost_usd, sum(tool_calls) AS tool_calls,
               sum(tool_errors) AS tool_errors, sum(reviewed) AS reviewed,
               sum(approved) AS approved, sum(rejected) AS rejected,
               fleetward.p95_ms(array_agg(le_ms) FILTER (WHERE le_ms IS NOT NULL),
                                array_agg(le_runs) FILTER (WHERE le_ms IS NOT NULL))
                   AS p95_latency_ms
        FROM fleetward.kpi_facts
        GROUP BY GROUPING SETS ((agent_id, days), (team, days), (agent_id, version, days))
    ) s;

-- Heartbeat time per agent and period (fleet.utilization_hourly: hours of the window).
CREATE VIEW fleetward.kpi_time AS
    SELECT u.agent_id, p.days, sum(u.busy_s) AS busy_s, sum(u.idle_s) AS idle_s
    FROM fleet.utilization_hourly u
    JOIN fleetward.kpi_periods p ON u.hour >= p.since::timestamp AT TIME ZONE 'UTC'
    GROUP BY u.agent_id, p.days;

-- Every registered agent, each period, with or without activity in it.
CREATE VIEW fleet.kpi_agents AS
    SELECT a.agent_id, a.team, a.version, p.days,
           coalesce(k.runs_started, 0) AS runs_started, coalesce(k.runs, 0) AS runs,
           k.success_rate, k.avg_latency_ms, k.p95_latency_ms,
           coalesce(k.cost_usd, 0) AS cost_usd, k.cost_per_run_usd,
           coalesce(k.tasks_done, 0) AS tasks_done, k.cost_per_task_usd,
           coalesce(k.reviewed, 0) AS reviewed, k.approval_rate, k.rework_rate,
           coalesce(k.tool_calls, 0) AS tool_calls, k.tool_error_rate,
           coalesce(t.busy_s, 0) AS busy_s, coalesce(t.idle_s, 0) AS idle_s,
           t.busy_s::float8 / nullif(t.busy_s + t.idle_s, 0) AS utilization
    FROM fleetward.agents a CROSS JOIN fleetward.kpi_periods p
    LEFT JOIN fleetward.kpi_levels k
           ON k.level = 'agent' AND k.agent_id = a.agent_id AND k.days = p.days
    LEFT JOIN fleetward.kpi_time t ON t.agent_id = a.agent_id AND t.days = p.days;

CREATE VIEW fleet.kpi_teams AS
    SELECT k.team, k.days, m.agents, k.runs_started, k.runs, k.success_rate, k.avg_latency_ms,
           k.p95_latency_ms, k.cost_usd, k.cost_per_run_usd, k.tasks_done, k.cost_per_task_usd,
           k.reviewed, k.approval_rate, k.rework_rate, k.tool_calls, k.tool_error_rate,
           coalesce(m.busy_s, 0) AS busy_s, coalesce(m.idle_s, 0) AS idle_s,
           m.busy_s::float8 / nullif(m.busy_s + m.idle_s, 0) AS utilization
    FROM fleetward.kpi_levels k
    LEFT JOIN LATERAL (
        SELECT count(*) AS agents, sum(t.busy_s) AS busy_s, sum(t.idle_s) AS idle_s
        FROM fleetward.agents a
        LEFT JOIN fleetward.kpi_time t ON t.agent_id = a.agent_id AND t.days = k.days
        WHERE a.team = k.team
    ) m ON true
    WHERE k.level = 'team';

CREATE VIEW fleet.kpi_versions AS
    SELECT k.agent_id, k.version, v.prompt, v.model, v.tools, k.version = a.version AS current,
           k.days, k.runs_started, k.runs, k.success_rate, k.avg_latency_ms, k.p95_latency_ms,
           k.cost_usd, k.cost_per_run_usd, k.tasks_done, k.cost_per_task_usd, k.reviewed,
           k.approval_rate, k.rework_rate, k.tool_calls, k.tool_error_rate,
           CASE WHEN k.version = a.version THEN coalesce(t.busy_s, 0) END AS busy_s,
           CASE WHEN k.version = a.version THEN coalesce(t.idle_s, 0) END AS idle_s,
           CASE WHEN k.version = a.version
                THEN t.busy_s::float8 / nullif(t.busy_s + t.idle_s, 0) END AS utilization
    FROM fleetward.kpi_levels k
    LEFT JOIN fleetward.agents a ON a.agent_id = k.agent_id
    LEFT JOIN fleetward.agent_versions v ON v.agent_id = k.agent_id AND v.version = k.version
    LEFT JOIN fleetward.kpi_time t ON t.agent_id = k.agent_id AND t.days = k.days
    WHERE k.level = 'version';
