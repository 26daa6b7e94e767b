-- The KPI views, fast (issue 16 benchmark): the views of migration 0025 summed every fact of the
-- last 30 days over every agent, team and version before a row could be picked (seconds for
-- 1,000 agents). Each view now sums only the rows of the scope asked for, by index: an agent's
-- (kpi_daily, kpi_latency_daily, deliverables and utilization_daily by agent and day), an agent
-- version's (the same, of that version), a team's (the team rollups below by team and day, and
-- the utilization of the agents in the team now). The columns and their meanings are those of
-- 0025; kpi_versions lists the versions of the agents in the registry (every agent a KPI was
-- folded for is there).
--
-- Rollups by day keep what a team's 30 days would otherwise sum per query (100 agents x 720
-- utilization hours, ~30,000 latency bucket rows, 3,000 day rows and reviews). Triggers on the
-- rows the projections write keep them, in the same transaction, so they hold exactly what their
-- sources hold, live and after a rebuild (emptying a source empties its rollup; a source row
-- written again adds only its difference):
-- - utilization_daily: per agent and UTC day, the finished hours' busy and idle seconds, each
--   hour rounded as fleet.utilization_hourly shows it (the current hour stays on
--   fleetward.utilization; the views add it);
-- - kpi_team_daily, kpi_team_latency_daily: kpi_daily and kpi_latency_daily summed per team;
-- - kpi_team_reviews: reviewed deliverables per team (none: 'unassigned'), UTC day of the
--   review and verdict.

DROP VIEW fleet.kpi_agents, fleet.kpi_teams, fleet.kpi_versions;
DROP VIEW fleetward.kpi_levels, fleetward.kpi_facts, fleetward.kpi_time;

CREATE TABLE fleetward.utilization_daily (
    agent_id text NOT NULL,
    day      date NOT NULL,
    busy_s   numeric NOT NULL,
    idle_s   numeric NOT NULL,
    PRIMARY KEY (agent_id, day)
);

CREATE TABLE fleetward.kpi_team_daily (
    team           text NOT NULL,
    day            date NOT NULL,
    runs_started   numeric NOT NULL,
    runs           numeric NOT NULL,
    runs_succeeded numeric NOT NULL,
    latency_ms     numeric NOT NULL,
    cost_usd       numeric NOT NULL,
    tool_calls     numeric NOT NULL,
    tool_errors    numeric NOT NULL,
    PRIMARY KEY (team, day)
);

CREATE TABLE fleetward.kpi_team_latency_daily (
    team  text NOT NULL,
    day   date NOT NULL,
    le_ms numeric NOT NULL,
    runs  bigint NOT NULL,
    PRIMARY KEY (team, day, le_ms)
);

CREATE TABLE fleetward.kpi_team_reviews (
    team     text NOT NULL,
    day      date NOT NULL,
    reviewed bigint NOT NULL,
    approved bigint NOT NULL,
    rejected bigint NOT NULL,
    PRIMARY KEY (team, day)
);

-- Each rollup trigger takes a source row away (OLD, sign -1) and adds one (NEW, sign 1).
CREATE FUNCTION fleetward.utilization_daily_add(r fleetward.utilization_hourly, sign int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleetward.utilization_daily AS d
    VALUES (r.agent_id, (r.hour AT TIME ZONE 'UTC')::date, sign * round(r.busy_us / 1e6, 3),
            sign * round(r.idle_us / 1e6, 3))
    ON CONFLICT (agent_id, day) DO UPDATE
    SET busy_s = d.busy_s + EXCLUDED.busy_s, idle_s = d.idle_s + EXCLUDED.idle_s
$$;

CREATE FUNCTION fleetward.kpi_team_daily_add(r fleetward.kpi_daily, sign int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleetward.kpi_team_daily AS d
    VALUES (r.team, r.day, sign * r.runs_started, sign * r.runs, sign * r.runs_succeeded,
            sign * r.latency_ms, sign * (r.model_cost_usd + r.tool_cost_usd),
            sign * r.tool_calls, sign * r.tool_errors)
    ON CONFLICT (team, day) DO UPDATE
    SET runs_started = d.runs_started + EXCLUDED.runs_started, runs = d.runs + EXCLUDED.runs,
        runs_succeeded = d.runs_succeeded + EXCLUDED.runs_succeeded,
        latency_ms = d.latency_ms + EXCLUDED.latency_ms, cost_usd = d.cost_usd + EXCLUDED.cost_usd,
        tool_calls = d.tool_calls + EXCLUDED.tool_calls,
        tool_errors = d.tool_errors + EXCLUDED.tool_errors
$$;

CREATE FUNCTION fleetward.kpi_team_latency_add(r fleetward.kpi_latency_daily, sign int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleetward.kpi_team_latency_daily AS d
    VALUES (r.team, r.day, r.le_ms, sign * r.runs)
    ON CONFLICT (team, day, le_ms) DO UPDATE SET runs = d.runs + EXCLUDED.runs
$$;

CREATE FUNCTION fleetward.kpi_team_reviews_add(r fleetward.deliverables, sign int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleetward.kpi_team_reviews AS d
    SELECT coalesce(r.team, 'unassigned'), (r.reviewed_at AT TIME ZONE 'UTC')::date, sign,
           sign * (r.verdict = 'approve')::int, sign * (r.verdict = 'reject')::int
    WHERE r.reviewed_at IS NOT NULL
    ON CONFLICT (team, day) DO UPDATE
    SET reviewed = d.reviewed + EXCLUDED.reviewed, approved = d.approved + EXCLUDED.approved,
        rejected = d.rejected + EXCLUDED.rejected
$$;

-- The row trigger of every rollup: TG_ARGV[0] names its _add function.
CREATE FUNCTION fleetward.rollup_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE format('SELECT fleetward.%I($1, -1)', TG_ARGV[0]) USING OLD;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE format('SELECT fleetward.%I($1, 1)', TG_ARGV[0]) USING NEW;
    END IF;
    RETURN NULL;
END $$;

-- The statement trigger that empties a rollup with its source: TG_ARGV[0] names the rollup.
CREATE FUNCTION fleetward.rollup_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('TRUNCATE fleetward.%I', TG_ARGV[0]);
    RETURN NULL;
END $$;

CREATE TRIGGER utilization_daily_rows
    AFTER INSERT OR UPDATE OR DELETE ON fleetward.utilization_hourly
    FOR EACH ROW EXECUTE FUNCTION fleetward.rollup_row('utilization_daily_add');
CREATE TRIGGER utilization_daily_emptied AFTER TRUNCATE ON fleetward.utilization_hourly
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.rollup_truncate('utilization_daily');
CREATE TRIGGER kpi_team_daily_rows
    AFTER INSERT OR UPDATE OR DELETE ON fleetward.kpi_daily
    FOR EACH ROW EXECUTE FUNCTION fleetward.rollup_row('kpi_team_daily_add');
CREATE TRIGGER kpi_team_daily_emptied AFTER TRUNCATE ON fleetward.kpi_daily
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.rollup_truncate('kpi_team_daily');
CREATE TRIGGER kpi_team_latency_rows
    AFTER INSERT OR UPDATE OR DELETE ON fleetward.kpi_latency_daily
    FOR EACH ROW EXECUTE FUNCTION fleetward.rollup_row('kpi_team_latency_add');
CREATE TRIGGER kpi_team_latency_emptied AFTER TRUNCATE ON fleetward.kpi_latency_daily
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.rollup_truncate('kpi_team_latency_daily');
CREATE TRIGGER kpi_team_reviews_rows
    AFTER INSERT OR UPDATE OR DELETE ON fleetward.deliverables
    FOR EACH ROW EXECUTE FUNCTION fleetward.rollup_row('kpi_team_reviews_add');
CREATE TRIGGER kpi_team_reviews_emptied AFTER TRUNCATE ON fleetward.deliverables
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.rollup_truncate('kpi_team_reviews');

-- Every rollup summed again from its source (this migration's backfill; after a bulk load
-- with the triggers off).
CREATE FUNCTION fleetward.kpi_rollups_fill() RETURNS void LANGUAGE sql AS $$
    TRUNCATE fleetward.utilization_daily, fleetward.kpi_team_daily,
             fleetward.kpi_team_latency_daily, fleetward.kpi_team_reviews;
    INSERT INTO fleetward.utilization_daily
    SELECT agent_id, (hour AT TIME ZONE 'UTC')::date, sum(round(busy_us / 1e6, 3)),
           sum(round(idle_us / 1e6, 3))
    FROM fleetward.utilization_hourly GROUP BY 1, 2;
    INSERT INTO fleetward.kpi_team_daily
    SELECT team, day, sum(runs_started), sum(runs), sum(runs_succeeded), sum(latency_ms),
           sum(model_cost_usd + tool_cost_usd), sum(tool_calls), sum(tool_errors)
    FROM fleetward.kpi_daily GROUP BY 1, 2;
    INSERT INTO fleetward.kpi_team_latency_daily
    SELECT team, day, le_ms, sum(runs) FROM fleetward.kpi_latency_daily GROUP BY 1, 2, 3;
    INSERT INTO fleetward.kpi_team_reviews
    SELECT coalesce(team, 'unassigned'), (reviewed_at AT TIME ZONE 'UTC')::date, count(*),
           count(*) FILTER (WHERE verdict = 'approve'), count(*) FILTER (WHERE verdict = 'reject')
    FROM fleetward.deliverables WHERE reviewed_at IS NOT NULL GROUP BY 1, 2;
$$;
SELECT fleetward.kpi_rollups_fill();

CREATE INDEX agents_by_team_and_id ON fleetward.agents (team, agent_id);
CREATE INDEX kpi_latency_daily_by_agent ON fleetward.kpi_latency_daily (agent_id, day)
    INCLUDE (version, le_ms, runs);
CREATE INDEX deliverables_by_agent_review ON fleetward.deliverables (agent, reviewed_at)
    WHERE reviewed_at IS NOT NULL;


-- The KPIs of one scope from its sums (the formulas of 0025, in one place).
-- In: runs started, runs, succeeded, latency (ms), cost, tool calls, tool errors, reviewed,
-- approved, rejected, p95 (ms), busy and idle seconds (null sums: no rows).
CREATE FUNCTION fleetward.kpi_row(
    numeric, numeric, numeric, numeric, numeric, numeric, numeric, bigint, bigint, bigint,
    numeric, numeric, numeric,
    OUT runs_started numeric, OUT runs numeric, OUT success_rate float8,
    OUT avg_latency_ms numeric, OUT p95_latency_ms numeric, OUT cost_usd numeric,
    OUT cost_per_run_usd numeric, OUT tasks_done bigint, OUT cost_per_task_usd numeric,
    OUT reviewed bigint, OUT approval_rate float8, OUT rework_rate float8,
    OUT tool_calls numeric, OUT tool_error_rate float8, OUT busy_s numeric, OUT idle_s numeric,
    OUT utilization float8)
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce($1, 0), coalesce($2, 0), $3::float8 / nullif($2, 0), $4 / nullif($2, 0),
           $11, coalesce($5, 0), $5 / nullif($2, 0), coalesce($9, 0), $5 / nullif($9, 0),
           coalesce($8, 0), $9::float8 / nullif($8, 0), $10::float8 / nullif($8, 0),
           coalesce($6, 0), $7::float8 / nullif($6, 0), coalesce($12, 0), coalesce($13, 0),
           $12::float8 / nullif($12 + $13, 0)
$$;

-- An agent's KPIs per period: its rows by agent and day; its busy and idle time, whole days
-- (utilization_daily) and its current hour (utilization).
CREATE VIEW fleet.kpi_agents AS
    SELECT a.agent_id, a.team, a.version, p.days, r.*
    FROM fleetward.agents a CROSS JOIN fleetward.kpi_periods p
    CROSS JOIN LATERAL (
        SELECT sum(k.runs_started) AS runs_started, sum(k.runs) AS runs,
               sum(k.runs_succeeded) AS succeeded, sum(k.latency_ms) AS latency_ms,
               sum(k.model_cost_usd + k.tool_cost_usd) AS cost_usd,
               sum(k.tool_calls) AS tool_calls, sum(k.tool_errors) AS tool_errors
        FROM fleetward.kpi_daily k WHERE k.agent_id = a.agent_id AND k.day >= p.since) k
    CROSS JOIN LATERAL (
        SELECT fleetward.p95_ms(array_agg(b.le_ms), array_agg(b.runs)) AS p95
        FROM (SELECT l.le_ms, sum(l.runs)::bigint AS runs FROM fleetward.kpi_latency_daily l
              WHERE l.agent_id = a.agent_id AND l.day >= p.since GROUP BY l.le_ms) b) l
    CROSS JOIN LATERAL (
        SELECT count(*) AS reviewed, count(*) FILTER (WHERE d.verdict = 'approve') AS approved,
               count(*) FILTER (WHERE d.verdict = 'reject') AS rejected
        FROM fleetward.deliverables d
        WHERE d.agent = a.agent_id AND d.reviewed_at >= p.since::timestamp AT TIME ZONE 'UTC') d
    CROSS JOIN LATERAL (
        SELECT sum(x.busy_s) AS busy_s, sum(x.idle_s) AS idle_s FROM (
            SELECT u.busy_s, u.idle_s FROM fleetward.utilization_daily u
            WHERE u.agent_id = a.agent_id AND u.day >= p.since
            UNION ALL
            SELECT round(c.hour_busy_us / 1e6, 3), round(c.hour_idle_us / 1e6, 3)
            FROM fleetward.utilization c
            WHERE c.agent_id = a.agent_id
              AND c.hour >= p.since::timestamp AT TIME ZONE 'UTC') x) t
    CROSS JOIN LATERAL fleetward.kpi_row(
        k.runs_started, k.runs, k.succeeded, k.latency_ms, k.cost_usd, k.tool_calls,
        k.tool_errors, d.reviewed, d.approved, d.rejected, l.p95, t.busy_s, t.idle_s) r;

-- An agent version's KPIs per period: the versions with rows in it; time for the current one.
CREATE VIEW fleet.kpi_versions AS
    SELECT a.agent_id, v.version, av.prompt, av.model, av.tools, v.version = a.version AS current,
           p.days, r.runs_started, r.runs, r.success_rate, r.avg_latency_ms, r.p95_latency_ms,
           r.cost_usd, r.cost_per_run_usd, r.tasks_done, r.cost_per_task_usd, r.reviewed,
           r.approval_rate, r.rework_rate, r.tool_calls, r.tool_error_rate,
           CASE WHEN v.version = a.version THEN r.busy_s END AS busy_s,
           CASE WHEN v.version = a.version THEN r.idle_s END AS idle_s,
           CASE WHEN v.version = a.version THEN r.utilization END AS utilization
    FROM fleetward.agents a CROSS JOIN fleetward.kpi_periods p
    CROSS JOIN LATERAL (
        SELECT k.version FROM fleetward.kpi_daily k
        WHERE k.agent_id = a.agent_id AND k.day >= p.since
        UNION
        SELECT coalesce(d.agent_version, '') FROM fleetward.deliverables d
        WHERE d.agent = a.agent_id AND d.reviewed_at >= p.since::timestamp AT TIME ZONE 'UTC') v
    LEFT JOIN fleetward.agent_versions av ON av.agent_id = a.agent_id AND av.version = v.version
    CROSS JOIN LATERAL (
        SELECT sum(k.runs_started) AS runs_started, sum(k.runs) AS runs,
               sum(k.runs_succeeded) AS succeeded, sum(k.latency_ms) AS latency_ms,
               sum(k.model_cost_usd + k.tool_cost_usd) AS cost_usd,
               sum(k.tool_calls) AS tool_calls, sum(k.tool_errors) AS tool_errors
        FROM fleetward.kpi_daily k
        WHERE k.agent_id = a.agent_id AND k.day >= p.since AND k.version = v.version) k
    CROSS JOIN LATERAL (
        SELECT fleetward.p95_ms(array_agg(b.le_ms), array_agg(b.runs)) AS p95
        FROM (SELECT l.le_ms, sum(l.runs)::bigint AS runs FROM fleetward.kpi_latency_daily l
              WHERE l.agent_id = a.agent_id AND l.day >= p.since AND l.version = v.version
              GROUP BY l.le_ms) b) l
    CROSS JOIN LATERAL (
        SELECT count(*) AS reviewed, count(*) FILTER (WHERE d.verdict = 'approve') AS approved,
               count(*) FILTER (WHERE d.verdict = 'reject') AS rejected
        FROM fleetward.deliverables d
        WHERE d.agent = a.agent_id AND d.reviewed_at >= p.since::timestamp AT TIME ZONE 'UTC'
          AND coalesce(d.agent_version, '') = v.version) d
    CROSS JOIN LATERAL (
        SELECT sum(x.busy_s) AS busy_s, sum(x.idle_s) AS idle_s FROM (
            SELECT u.busy_s, u.idle_s FROM fleetward.utilization_daily u
            WHERE v.version = a.version AND u.agent_id = a.agent_id AND u.day >= p.since
            UNION ALL
            SELECT round(c.hour_busy_us / 1e6, 3), round(c.hour_idle_us / 1e6, 3)
            FROM fleetward.utilization c
            WHERE v.version = a.version AND c.agent_id = a.agent_id
              AND c.hour >= p.since::timestamp AT TIME ZONE 'UTC') x) t
    CROSS JOIN LATERAL fleetward.kpi_row(
        k.runs_started, k.runs, k.succeeded, k.latency_ms, k.cost_usd, k.tool_calls,
        k.tool_errors, d.reviewed, d.approved, d.rejected, l.p95, t.busy_s, t.idle_s) r;

-- A team's KPIs per period, from the team rollups; the time of the agents in it now. A team is
-- listed for a period with rows or reviews in it.
CREATE VIEW fleet.kpi_teams AS
    SELECT n.team, p.days, m.agents, r.runs_started, r.runs, r.success_rate, r.avg_latency_ms,
           r.p95_latency_ms, r.cost_usd, r.cost_per_run_usd, r.tasks_done, r.cost_per_task_usd,
           r.reviewed, r.approval_rate, r.rework_rate, r.tool_calls, r.tool_error_rate,
           r.busy_s, r.idle_s, r.utilization
    FROM (SELECT team FROM fleetward.kpi_team_daily
          UNION SELECT team FROM fleetward.kpi_team_reviews) n
    CROSS JOIN fleetward.kpi_periods p
    CROSS JOIN LATERAL (
        SELECT sum(k.runs_started) AS runs_started, sum(k.runs) AS runs,
               sum(k.runs_succeeded) AS succeeded, sum(k.latency_ms) AS latency_ms,
               sum(k.cost_usd) AS cost_usd, sum(k.tool_calls) AS tool_calls,
               sum(k.tool_errors) AS tool_errors, count(*) AS facts
        FROM fleetward.kpi_team_daily k WHERE k.team = n.team AND k.day >= p.since) k
    CROSS JOIN LATERAL (
        SELECT fleetward.p95_ms(array_agg(b.le_ms), array_agg(b.runs)) AS p95
        FROM (SELECT l.le_ms, sum(l.runs)::bigint AS runs
              FROM fleetward.kpi_team_latency_daily l
              WHERE l.team = n.team AND l.day >= p.since GROUP BY l.le_ms) b) l
    CROSS JOIN LATERAL (
        SELECT sum(d.reviewed)::bigint AS reviewed, sum(d.approved)::bigint AS approved,
               sum(d.rejected)::bigint AS rejected
        FROM fleetward.kpi_team_reviews d WHERE d.team = n.team AND d.day >= p.since) d
    CROSS JOIN LATERAL (
        SELECT (SELECT count(*) FROM fleetward.agents a WHERE a.team = n.team) AS agents,
               sum(x.busy_s) AS busy_s, sum(x.idle_s) AS idle_s
        FROM (SELECT u.busy_s, u.idle_s FROM fleetward.agents a
              JOIN fleetward.utilization_daily u ON u.agent_id = a.agent_id
              WHERE a.team = n.team AND u.day >= p.since
              UNION ALL
              SELECT round(c.hour_busy_us / 1e6, 3), round(c.hour_idle_us / 1e6, 3)
              FROM fleetward.agents a JOIN fleetward.utilization c ON c.agent_id = a.agent_id
              WHERE a.team = n.team
                AND c.hour >= p.since::timestamp AT TIME ZONE 'UTC') x) m
    CROSS JOIN LATERAL fleetward.kpi_row(
        k.runs_started, k.runs, k.succeeded, k.latency_ms, k.cost_usd, k.tool_calls,
        k.tool_errors, d.reviewed, d.approved, d.rejected, l.p95, m.busy_s, m.idle_s) r
    WHERE k.facts > 0 OR d.reviewed > 0;
