-- The KPI views under 50 ms at 10,000 agents x 30 days (issue 16's target; docs/benchmarks.md,
-- "KPI views"). Migration 0035 made each view sum only its scope's day rows; a page of 100
-- agents still summed ~270 latency bucket rows an agent, and every team at once summed the
-- utilization of its 100 agents (3,000 day rows a team). Now every sum a view reads is kept as
-- a running total per scope and day, so a window of any length is two index probes a total:
--
--   sums over the days since `since` = total(latest day) - total(last day before since)
--
-- fleetward.kpi_cumulative holds, per kind, scope and day, the sums of every source row of the
-- scope on that day or earlier (a row on each day a source row of the scope has or had). Row
-- triggers keep it beside the sources, in the same transaction: a source row written on day d
-- adds its difference to the scope's rows of day d and later (a row for d is first made from
-- the one before it), so a late or out-of-order row lands where it belongs, and emptying a
-- source (a rebuild) empties its kinds, which the replay fills again. The sums are exact
-- (numeric, bigint), so a difference of totals is exactly the sum of the window's rows.
--
-- Kinds, each written by one projection's transactions, and the columns they keep (the others
-- stay 0):
-- - agent_runs, team_runs (kpi_daily by agent_id, by team): kpi_rows (kpi_daily rows),
--   runs_started, runs, runs_succeeded, latency_ms, cost_usd (model and tool), tool_calls,
--   tool_errors;
-- - agent_latency, team_latency (kpi_latency_daily): runs_le, element i the runs with latency
--   in bucket i or a lower one (bucket i: upper edge fleetward.kpi_edges()[i]); past its last
--   element every count is the last one's, so a row holds the buckets up to its highest;
-- - agent_reviews, team_reviews (deliverables by author and team, UTC day of reviewed_at; no
--   team: 'unassigned'): reviewed, approved, rejected;
-- - agent_time (utilization_daily): busy_s, idle_s;
-- - team_time: the agent_time of the agents in the team now (fleetward.agents.team), as the
--   views counted it before: heartbeats name no team. An agent's change of team moves its whole
--   agent_time from the old team to the new one. utilization_daily (projection utilization)
--   and fleetward.agents (projection agents) are written by different transactions, so both
--   triggers take one advisory lock (7340416) first and read the other's table after it:
--   whichever commits second sees the first's rows.
-- The team rollups of 0035 (kpi_team_daily, kpi_team_latency_daily, kpi_team_reviews) are
-- replaced by the team kinds; utilization_daily stays (agent_time's source, kpi_versions).

DROP TRIGGER kpi_team_daily_rows ON fleetward.kpi_daily;
DROP TRIGGER kpi_team_daily_emptied ON fleetward.kpi_daily;
DROP TRIGGER kpi_team_latency_rows ON fleetward.kpi_latency_daily;
DROP TRIGGER kpi_team_latency_emptied ON fleetward.kpi_latency_daily;
DROP TRIGGER kpi_team_reviews_rows ON fleetward.deliverables;
DROP TRIGGER kpi_team_reviews_emptied ON fleetward.deliverables;
DROP VIEW fleet.kpi_agents, fleet.kpi_teams;
DROP FUNCTION fleetward.kpi_rollups_fill();
DROP FUNCTION fleetward.kpi_team_daily_add(fleetward.kpi_daily, int);
DROP FUNCTION fleetward.kpi_team_latency_add(fleetward.kpi_latency_daily, int);
DROP FUNCTION fleetward.kpi_team_reviews_add(fleetward.deliverables, int);
DROP TABLE fleetward.kpi_team_daily, fleetward.kpi_team_latency_daily,
           fleetward.kpi_team_reviews;

CREATE TABLE fleetward.kpi_cumulative (
    kind           text NOT NULL,            -- agent_runs, agent_latency, ... (above)
    scope          text NOT NULL,            -- an agent_id (agent_...) or a team (team_...)
    day            date NOT NULL,            -- UTC day: the sums of the source rows up to it
    kpi_rows       bigint NOT NULL DEFAULT 0,
    runs_started   numeric NOT NULL DEFAULT 0,
    runs           numeric NOT NULL DEFAULT 0,
    runs_succeeded numeric NOT NULL DEFAULT 0,
    latency_ms     numeric NOT NULL DEFAULT 0,
    cost_usd       numeric NOT NULL DEFAULT 0,
    tool_calls     numeric NOT NULL DEFAULT 0,
    tool_errors    numeric NOT NULL DEFAULT 0,
    runs_le        bigint[] NOT NULL DEFAULT '{}',
    reviewed       bigint NOT NULL DEFAULT 0,
    approved       bigint NOT NULL DEFAULT 0,
    rejected       bigint NOT NULL DEFAULT 0,
    busy_s         numeric NOT NULL DEFAULT 0,
    idle_s         numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, scope, day)
);

-- The latency buckets' upper edges (ms), projections/kpis.py EDGES_MS: the R20 numbers times
-- 10^0 .. 10^9, then 10^10 (201 edges; tests/integration/test_kpi_totals.py compares them).
CREATE FUNCTION fleetward.kpi_edges() RETURNS numeric[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
    '{1,1.12,1.25,1.4,1.6,1.8,2,2.24,2.5,2.8,3.15,3.55,4,4.5,5,5.6,6.3,7.1,8,9,10,11.2,12.5,
     14,16,18,20,22.4,25,28,31.5,35.5,40,45,50,56,63,71,80,90,100,112,125,140,160,180,200,
     224,250,280,315,355,400,450,500,560,630,710,800,900,1000,1120,1250,1400,1600,1800,2000,
     2240,2500,2800,3150,3550,4000,4500,5000,5600,6300,7100,8000,9000,10000,11200,12500,
     14000,16000,18000,20000,22400,25000,28000,31500,35500,40000,45000,50000,56000,63000,
     71000,80000,90000,100000,112000,125000,140000,160000,180000,200000,224000,250000,280000,
     315000,355000,400000,450000,500000,560000,630000,710000,800000,900000,1000000,1120000,
     1250000,1400000,1600000,1800000,2000000,2240000,2500000,2800000,3150000,3550000,4000000,
     4500000,5000000,5600000,6300000,7100000,8000000,9000000,10000000,11200000,12500000,
     14000000,16000000,18000000,20000000,22400000,25000000,28000000,31500000,35500000,
     40000000,45000000,50000000,56000000,63000000,71000000,80000000,90000000,100000000,
     112000000,125000000,140000000,160000000,180000000,200000000,224000000,250000000,
     280000000,315000000,355000000,400000000,450000000,500000000,560000000,630000000,
     710000000,800000000,900000000,1000000000,1120000000,1250000000,1400000000,1600000000,
     1800000000,2000000000,2240000000,2500000000,2800000000,3150000000,3550000000,4000000000,
     4500000000,5000000000,5600000000,6300000000,7100000000,8000000000,9000000000,
     10000000000}'::numeric[]
$$;

-- a + sign * b for two runs_le vectors (past its end a vector's count is its last one's).
CREATE FUNCTION fleetward.le_plus(a bigint[], sign int, b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    la int := coalesce(array_length(a, 1), 0);
    lb int := coalesce(array_length(b, 1), 0);
    r bigint[] := '{}';
BEGIN
    FOR i IN 1 .. greatest(la, lb) LOOP
        r[i] := CASE WHEN la = 0 THEN 0 ELSE a[least(i, la)] END
                + sign * CASE WHEN lb = 0 THEN 0 ELSE b[least(i, lb)] END;
    END LOOP;
    RETURN r;
END $$;

CREATE FUNCTION fleetward.le_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT fleetward.le_plus(a, 1, b) $$;

CREATE AGGREGATE fleetward.le_sum(bigint[]) (
    SFUNC = fleetward.le_add, STYPE = bigint[], INITCOND = '{}');

-- The runs_le vector of n runs in the bucket of upper edge le (ms).
CREATE FUNCTION fleetward.le_vec(le numeric, n bigint) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_fill(0::bigint, ARRAY[array_position(fleetward.kpi_edges(), le) - 1]) || n
$$;

-- The nearest-rank 95th percentile of the runs between two runs_le vectors (latest - before):
-- the upper edge of the first bucket whose count reaches ceil(0.95 n); null for no runs (as
-- fleetward.p95_ms over the bucket rows).
CREATE FUNCTION fleetward.p95_le(latest bigint[], before bigint[]) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    la int := coalesce(array_length(latest, 1), 0);
    lb int := coalesce(array_length(before, 1), 0);
    target numeric;
    lo int := 1;
    hi int := greatest(la, lb);
    mid int;
BEGIN
    IF la = 0 THEN
        RETURN NULL;
    END IF;
    target := ceil(0.95 * (latest[la] - CASE WHEN lb = 0 THEN 0 ELSE before[lb] END));
    IF target <= 0 THEN
        RETURN NULL;
    END IF;
    WHILE lo < hi LOOP  -- the counts grow with i: the first i reaching target
        mid := (lo + hi) / 2;
        IF latest[least(mid, la)] - (CASE WHEN lb = 0 THEN 0 ELSE before[least(mid, lb)] END)
           >= target THEN
            hi := mid;
        ELSE
            lo := mid + 1;
        END IF;
    END LOOP;
    RETURN (fleetward.kpi_edges())[lo];
END $$;

-- Add delta's sums to the running totals of kind and scope from day d on (delta's kind, scope
-- and day unused).
CREATE FUNCTION fleetward.kpi_cumulative_add(k text, s text, d date,
                                             delta fleetward.kpi_cumulative)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF delta.kpi_rows = 0 AND delta.runs_started = 0 AND delta.runs = 0
       AND delta.runs_succeeded = 0 AND delta.latency_ms = 0 AND delta.cost_usd = 0
       AND delta.tool_calls = 0 AND delta.tool_errors = 0 AND delta.reviewed = 0
       AND delta.approved = 0 AND delta.rejected = 0 AND delta.busy_s = 0 AND delta.idle_s = 0
       AND 0 = ALL (delta.runs_le) THEN
        RETURN;
    END IF;
    INSERT INTO fleetward.kpi_cumulative
    SELECT k, s, d, p.kpi_rows, p.runs_started, p.runs, p.runs_succeeded, p.latency_ms, p.cost_usd,
           p.tool_calls, p.tool_errors, p.runs_le, p.reviewed, p.approved, p.rejected, p.busy_s,
           p.idle_s
    FROM (SELECT * FROM fleetward.kpi_cumulative
          WHERE kind = k AND scope = s AND day < d ORDER BY day DESC LIMIT 1) p
    ON CONFLICT (kind, scope, day) DO NOTHING;
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day) VALUES (k, s, d)
    ON CONFLICT (kind, scope, day) DO NOTHING;
    UPDATE fleetward.kpi_cumulative c
    SET kpi_rows = c.kpi_rows + delta.kpi_rows, runs_started = c.runs_started + delta.runs_started,
        runs = c.runs + delta.runs, runs_succeeded = c.runs_succeeded + delta.runs_succeeded,
        latency_ms = c.latency_ms + delta.latency_ms, cost_usd = c.cost_usd + delta.cost_usd,
        tool_calls = c.tool_calls + delta.tool_calls,
        tool_errors = c.tool_errors + delta.tool_errors,
        runs_le = CASE WHEN delta.runs_le = '{}' THEN c.runs_le
                       ELSE fleetward.le_plus(c.runs_le, 1, delta.runs_le) END,
        reviewed = c.reviewed + delta.reviewed, approved = c.approved + delta.approved,
        rejected = c.rejected + delta.rejected, busy_s = c.busy_s + delta.busy_s,
        idle_s = c.idle_s + delta.idle_s
    WHERE c.kind = k AND c.scope = s AND c.day >= d;
END $$;

-- A delta of the given sums (the others 0).
CREATE FUNCTION fleetward.kpi_delta(
    kpi_rows bigint = 0, runs_started numeric = 0, runs numeric = 0, runs_succeeded numeric = 0,
    latency_ms numeric = 0, cost_usd numeric = 0, tool_calls numeric = 0,
    tool_errors numeric = 0, runs_le bigint[] = '{}', reviewed bigint = 0, approved bigint = 0,
    rejected bigint = 0, busy_s numeric = 0, idle_s numeric = 0)
RETURNS fleetward.kpi_cumulative LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW('', '', NULL, kpi_rows, runs_started, runs, runs_succeeded, latency_ms, cost_usd,
               tool_calls, tool_errors, runs_le, reviewed, approved, rejected, busy_s,
               idle_s)::fleetward.kpi_cumulative
$$;

-- Add sign times the time (busy_s, idle_s) of (src_kind, src) to that of (k, s), every day.
CREATE FUNCTION fleetward.kpi_cumulative_merge(k text, s text, src_kind text, src text, sign int)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day, busy_s, idle_s)
    SELECT k, s, x.day, coalesce(p.busy_s, 0), coalesce(p.idle_s, 0)
    FROM fleetward.kpi_cumulative x
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative
                       WHERE kind = k AND scope = s AND day < x.day
                       ORDER BY day DESC LIMIT 1) p ON true
    WHERE x.kind = src_kind AND x.scope = src
    ON CONFLICT (kind, scope, day) DO NOTHING;
    UPDATE fleetward.kpi_cumulative c
    SET busy_s = c.busy_s + sign * x.busy_s, idle_s = c.idle_s + sign * x.idle_s
    FROM (SELECT t.day, u.busy_s, u.idle_s FROM fleetward.kpi_cumulative t
          CROSS JOIN LATERAL (SELECT busy_s, idle_s FROM fleetward.kpi_cumulative
                              WHERE kind = src_kind AND scope = src AND day <= t.day
                              ORDER BY day DESC LIMIT 1) u
          WHERE t.kind = k AND t.scope = s) x
    WHERE c.kind = k AND c.scope = s AND c.day = x.day;
END $$;

-- Add many deltas at once (each row: kind, scope, day and the sums to add): a statement's
-- rows, in three statements whatever their number.
CREATE FUNCTION fleetward.kpi_cumulative_add_all(deltas fleetward.kpi_cumulative[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleetward.kpi_cumulative
    SELECT d.kind, d.scope, d.day, coalesce(p.kpi_rows, 0), coalesce(p.runs_started, 0),
           coalesce(p.runs, 0), coalesce(p.runs_succeeded, 0), coalesce(p.latency_ms, 0),
           coalesce(p.cost_usd, 0), coalesce(p.tool_calls, 0), coalesce(p.tool_errors, 0),
           coalesce(p.runs_le, '{}'), coalesce(p.reviewed, 0), coalesce(p.approved, 0),
           coalesce(p.rejected, 0), coalesce(p.busy_s, 0), coalesce(p.idle_s, 0)
    FROM (SELECT DISTINCT kind, scope, day FROM unnest(deltas)) d
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = d.kind AND c.scope = d.scope AND c.day < d.day
                       ORDER BY c.day DESC LIMIT 1) p ON true
    ON CONFLICT (kind, scope, day) DO NOTHING;
    UPDATE fleetward.kpi_cumulative c
    SET kpi_rows = c.kpi_rows + s.kpi_rows, runs_started = c.runs_started + s.runs_started,
        runs = c.runs + s.runs, runs_succeeded = c.runs_succeeded + s.runs_succeeded,
        latency_ms = c.latency_ms + s.latency_ms, cost_usd = c.cost_usd + s.cost_usd,
        tool_calls = c.tool_calls + s.tool_calls, tool_errors = c.tool_errors + s.tool_errors,
        runs_le = CASE WHEN s.runs_le = '{}' THEN c.runs_le
                       ELSE fleetward.le_plus(c.runs_le, 1, s.runs_le) END,
        reviewed = c.reviewed + s.reviewed, approved = c.approved + s.approved,
        rejected = c.rejected + s.rejected, busy_s = c.busy_s + s.busy_s,
        idle_s = c.idle_s + s.idle_s
    FROM (SELECT t.kind, t.scope, t.day, sum(d.kpi_rows) AS kpi_rows,
                 sum(d.runs_started) AS runs_started, sum(d.runs) AS runs,
                 sum(d.runs_succeeded) AS runs_succeeded, sum(d.latency_ms) AS latency_ms,
                 sum(d.cost_usd) AS cost_usd, sum(d.tool_calls) AS tool_calls,
                 sum(d.tool_errors) AS tool_errors, fleetward.le_sum(d.runs_le) AS runs_le,
                 sum(d.reviewed) AS reviewed, sum(d.approved) AS approved,
                 sum(d.rejected) AS rejected, sum(d.busy_s) AS busy_s, sum(d.idle_s) AS idle_s
          FROM unnest(deltas) d
          JOIN fleetward.kpi_cumulative t
            ON t.kind = d.kind AND t.scope = d.scope AND t.day >= d.day
          GROUP BY t.kind, t.scope, t.day) s
    WHERE c.kind = s.kind AND c.scope = s.scope AND c.day = s.day;
END $$;

-- The rows a statement trigger was fired for, each with its sign: NEW's 1, OLD's -1 (an UPDATE
-- keeps a row's key). SQL over the trigger's transition tables new_rows and old_rows.
CREATE FUNCTION fleetward.kpi_changed_rows(op text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE op WHEN 'INSERT' THEN 'SELECT 1 AS g, n.* FROM new_rows n'
                   WHEN 'DELETE' THEN 'SELECT -1 AS g, o.* FROM old_rows o'
                   ELSE 'SELECT 1 AS g, n.* FROM new_rows n UNION ALL '
                        'SELECT -1 AS g, o.* FROM old_rows o' END
$$;

-- The statement triggers of kpi_daily and kpi_latency_daily (the rows projection spend writes
-- in each commit): their rows' sums per agent and per team, in one kpi_cumulative_add_all.
CREATE FUNCTION fleetward.kpi_runs_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas fleetward.kpi_cumulative[];
BEGIN
    EXECUTE format($q$
        SELECT ARRAY(
            SELECT ROW(kind, scope, day, kpi_rows, runs_started, runs, runs_succeeded,
                       latency_ms, cost_usd, tool_calls, tool_errors, '{}', 0, 0, 0, 0, 0)
                   ::fleetward.kpi_cumulative
            FROM (SELECT k.kind, CASE WHEN k.kind = 'agent_runs' THEN r.agent_id ELSE r.team END
                             AS scope, r.day, sum(r.g) AS kpi_rows,
                         sum(r.g * r.runs_started) AS runs_started, sum(r.g * r.runs) AS runs,
                         sum(r.g * r.runs_succeeded) AS runs_succeeded,
                         sum(r.g * r.latency_ms) AS latency_ms,
                         sum(r.g * (r.model_cost_usd + r.tool_cost_usd)) AS cost_usd,
                         sum(r.g * r.tool_calls) AS tool_calls,
                         sum(r.g * r.tool_errors) AS tool_errors
                  FROM (%s) r CROSS JOIN (VALUES ('agent_runs'), ('team_runs')) AS k(kind)
                  GROUP BY 1, 2, 3) x
            WHERE kpi_rows <> 0 OR runs_started <> 0 OR runs <> 0 OR runs_succeeded <> 0
               OR latency_ms <> 0 OR cost_usd <> 0 OR tool_calls <> 0 OR tool_errors <> 0)
        $q$, fleetward.kpi_changed_rows(TG_OP)) INTO deltas;
    PERFORM fleetward.kpi_cumulative_add_all(deltas);
    RETURN NULL;
END $$;

CREATE FUNCTION fleetward.kpi_latency_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas fleetward.kpi_cumulative[];
BEGIN
    EXECUTE format($q$
        SELECT ARRAY(
            SELECT ROW(kind, scope, day, 0, 0, 0, 0, 0, 0, 0, 0, v, 0, 0, 0, 0, 0)
                   ::fleetward.kpi_cumulative
            FROM (SELECT k.kind,
                         CASE WHEN k.kind = 'agent_latency' THEN r.agent_id ELSE r.team END
                             AS scope, r.day,
                         fleetward.le_sum(fleetward.le_vec(r.le_ms, r.g * r.runs)) AS v
                  FROM (%s) r CROSS JOIN (VALUES ('agent_latency'), ('team_latency')) AS k(kind)
                  GROUP BY 1, 2, 3) x
            WHERE NOT 0 = ALL (v))
        $q$, fleetward.kpi_changed_rows(TG_OP)) INTO deltas;
    PERFORM fleetward.kpi_cumulative_add_all(deltas);
    RETURN NULL;
END $$;

-- The row triggers of deliverables and utilization_daily (reviews and finished hours: rarer):
-- each adds NEW's sums and takes OLD's away (a deliverable's review may move, then both).
CREATE FUNCTION fleetward.kpi_reviews_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign int := -1;
    r fleetward.deliverables;
    delta fleetward.kpi_cumulative;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.reviewed_at IS NOT DISTINCT FROM NEW.reviewed_at
       AND OLD.verdict IS NOT DISTINCT FROM NEW.verdict AND OLD.agent = NEW.agent
       AND OLD.team IS NOT DISTINCT FROM NEW.team THEN
        RETURN NULL;
    END IF;
    FOREACH r IN ARRAY ARRAY[OLD, NEW]::fleetward.deliverables[] LOOP
        IF r.reviewed_at IS NOT NULL AND (sign = -1 AND TG_OP <> 'INSERT'
                                          OR sign = 1 AND TG_OP <> 'DELETE') THEN
            delta := fleetward.kpi_delta(reviewed => sign,
                approved => sign * (r.verdict = 'approve')::int,
                rejected => sign * (r.verdict = 'reject')::int);
            PERFORM fleetward.kpi_cumulative_add('agent_reviews', r.agent,
                (r.reviewed_at AT TIME ZONE 'UTC')::date, delta);
            PERFORM fleetward.kpi_cumulative_add('team_reviews', coalesce(r.team, 'unassigned'),
                (r.reviewed_at AT TIME ZONE 'UTC')::date, delta);
        END IF;
        sign := 1;
    END LOOP;
    RETURN NULL;
END $$;

-- utilization_daily: the agent's time, and its team's now, under the team-time lock.
CREATE FUNCTION fleetward.kpi_time_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r fleetward.utilization_daily := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    delta fleetward.kpi_cumulative;
    t text;
BEGIN
    delta := fleetward.kpi_delta(
        busy_s => CASE WHEN TG_OP = 'DELETE' THEN 0 ELSE NEW.busy_s END
                  - CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.busy_s END,
        idle_s => CASE WHEN TG_OP = 'DELETE' THEN 0 ELSE NEW.idle_s END
                  - CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.idle_s END);
    PERFORM fleetward.kpi_cumulative_add('agent_time', r.agent_id, r.day, delta);
    PERFORM pg_advisory_xact_lock(7340416);  -- the team-time lock
    SELECT a.team INTO t FROM fleetward.agents a WHERE a.agent_id = r.agent_id;
    IF FOUND THEN
        PERFORM fleetward.kpi_cumulative_add('team_time', t, r.day, delta);
    END IF;
    RETURN NULL;
END $$;

-- fleetward.agents: an agent registered, gone, or moved to another team takes its time along.
CREATE FUNCTION fleetward.kpi_team_time_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7340416);  -- the team-time lock
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM fleetward.kpi_cumulative_merge('team_time', OLD.team, 'agent_time',
                                               OLD.agent_id, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM fleetward.kpi_cumulative_merge('team_time', NEW.team, 'agent_time',
                                               NEW.agent_id, 1);
    END IF;
    RETURN NULL;
END $$;

-- The statement trigger that empties kinds with their source: TG_ARGV names them.
CREATE FUNCTION fleetward.kpi_cumulative_emptied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM fleetward.kpi_cumulative WHERE kind = ANY (TG_ARGV);
    RETURN NULL;
END $$;

CREATE TRIGGER kpi_runs_added AFTER INSERT ON fleetward.kpi_daily
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_runs_rows();
CREATE TRIGGER kpi_runs_changed AFTER UPDATE ON fleetward.kpi_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_runs_rows();
CREATE TRIGGER kpi_runs_removed AFTER DELETE ON fleetward.kpi_daily
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_runs_rows();
CREATE TRIGGER kpi_runs_emptied AFTER TRUNCATE ON fleetward.kpi_daily
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_cumulative_emptied('agent_runs', 'team_runs');
CREATE TRIGGER kpi_latency_added AFTER INSERT ON fleetward.kpi_latency_daily
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_latency_rows();
CREATE TRIGGER kpi_latency_changed AFTER UPDATE ON fleetward.kpi_latency_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_latency_rows();
CREATE TRIGGER kpi_latency_removed AFTER DELETE ON fleetward.kpi_latency_daily
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_latency_rows();
CREATE TRIGGER kpi_latency_emptied AFTER TRUNCATE ON fleetward.kpi_latency_daily
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_cumulative_emptied('agent_latency',
                                                                         'team_latency');
CREATE TRIGGER kpi_reviews_rows AFTER INSERT OR UPDATE OR DELETE ON fleetward.deliverables
    FOR EACH ROW EXECUTE FUNCTION fleetward.kpi_reviews_rows();
CREATE TRIGGER kpi_reviews_emptied AFTER TRUNCATE ON fleetward.deliverables
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_cumulative_emptied('agent_reviews',
                                                                         'team_reviews');
CREATE TRIGGER kpi_time_rows AFTER INSERT OR UPDATE OR DELETE ON fleetward.utilization_daily
    FOR EACH ROW EXECUTE FUNCTION fleetward.kpi_time_rows();
CREATE TRIGGER kpi_time_emptied AFTER TRUNCATE ON fleetward.utilization_daily
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_cumulative_emptied('agent_time',
                                                                         'team_time');
CREATE TRIGGER kpi_team_time_added AFTER INSERT OR DELETE ON fleetward.agents
    FOR EACH ROW EXECUTE FUNCTION fleetward.kpi_team_time_rows();
CREATE TRIGGER kpi_team_time_moved AFTER UPDATE OF team ON fleetward.agents
    FOR EACH ROW WHEN (OLD.team IS DISTINCT FROM NEW.team)
    EXECUTE FUNCTION fleetward.kpi_team_time_rows();
CREATE TRIGGER kpi_team_time_emptied AFTER TRUNCATE ON fleetward.agents
    FOR EACH STATEMENT EXECUTE FUNCTION fleetward.kpi_cumulative_emptied('team_time');

-- Every running total summed again from the sources (this migration's backfill; after a bulk
-- load with the triggers off): each day's sums, then running sums over the days.
CREATE FUNCTION fleetward.kpi_cumulative_fill() RETURNS void LANGUAGE sql AS $$
    TRUNCATE fleetward.kpi_cumulative;
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day, kpi_rows, runs_started, runs,
        runs_succeeded, latency_ms, cost_usd, tool_calls, tool_errors)
    SELECT kind, scope, day, sum(n) OVER w, sum(runs_started) OVER w, sum(runs) OVER w,
           sum(runs_succeeded) OVER w, sum(latency_ms) OVER w, sum(cost_usd) OVER w,
           sum(tool_calls) OVER w, sum(tool_errors) OVER w
    FROM (SELECT CASE WHEN g = 0 THEN 'agent_runs' ELSE 'team_runs' END AS kind,
                 CASE WHEN g = 0 THEN agent_id ELSE team END AS scope, day, count(*) AS n,
                 sum(runs_started) AS runs_started, sum(runs) AS runs,
                 sum(runs_succeeded) AS runs_succeeded, sum(latency_ms) AS latency_ms,
                 sum(model_cost_usd + tool_cost_usd) AS cost_usd, sum(tool_calls) AS tool_calls,
                 sum(tool_errors) AS tool_errors
          FROM fleetward.kpi_daily CROSS JOIN (VALUES (0), (1)) AS x(g)
          GROUP BY 1, 2, 3) s
    WINDOW w AS (PARTITION BY kind, scope ORDER BY day);
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day, runs_le)
    SELECT kind, scope, day, fleetward.le_sum(v) OVER (PARTITION BY kind, scope ORDER BY day)
    FROM (SELECT kind, scope, day, fleetward.le_sum(fleetward.le_vec(le_ms, runs)) AS v
          FROM (SELECT CASE WHEN g = 0 THEN 'agent_latency' ELSE 'team_latency' END AS kind,
                       CASE WHEN g = 0 THEN agent_id ELSE team END AS scope, day, le_ms,
                       sum(runs)::bigint AS runs
                FROM fleetward.kpi_latency_daily CROSS JOIN (VALUES (0), (1)) AS x(g)
                GROUP BY 1, 2, 3, 4) b
          GROUP BY 1, 2, 3) s;
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day, reviewed, approved, rejected)
    SELECT kind, scope, day, sum(n) OVER w, sum(a) OVER w, sum(r) OVER w
    FROM (SELECT CASE WHEN g = 0 THEN 'agent_reviews' ELSE 'team_reviews' END AS kind,
                 CASE WHEN g = 0 THEN agent ELSE coalesce(team, 'unassigned') END AS scope,
                 (reviewed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n,
                 count(*) FILTER (WHERE verdict = 'approve') AS a,
                 count(*) FILTER (WHERE verdict = 'reject') AS r
          FROM fleetward.deliverables CROSS JOIN (VALUES (0), (1)) AS x(g)
          WHERE reviewed_at IS NOT NULL GROUP BY 1, 2, 3) s
    WINDOW w AS (PARTITION BY kind, scope ORDER BY day);
    INSERT INTO fleetward.kpi_cumulative (kind, scope, day, busy_s, idle_s)
    SELECT kind, scope, day, sum(busy_s) OVER w, sum(idle_s) OVER w
    FROM (SELECT 'agent_time' AS kind, agent_id AS scope, day, busy_s, idle_s
          FROM fleetward.utilization_daily
          UNION ALL
          SELECT 'team_time', a.team, u.day, sum(u.busy_s), sum(u.idle_s)
          FROM fleetward.utilization_daily u JOIN fleetward.agents a USING (agent_id)
          GROUP BY a.team, u.day) s
    WINDOW w AS (PARTITION BY kind, scope ORDER BY day);
$$;
SELECT fleetward.kpi_cumulative_fill();

-- utilization_daily summed again from utilization_hourly, then every running total (a check
-- of what the triggers kept: tests/integration/test_kpis.py).
CREATE FUNCTION fleetward.kpi_rollups_fill() RETURNS void LANGUAGE sql AS $$
    TRUNCATE fleetward.utilization_daily;
    INSERT INTO fleetward.utilization_daily
    SELECT agent_id, (hour AT TIME ZONE 'UTC')::date, sum(round(busy_us / 1e6, 3)),
           sum(round(idle_us / 1e6, 3))
    FROM fleetward.utilization_hourly GROUP BY 1, 2;
    SELECT fleetward.kpi_cumulative_fill();
$$;

-- The sums of an agent's or a team's rows (lvl: 'agent' or 'team'; s: its id) over the days
-- since `since`: each running total at its latest day (1) less the one before `since` (0), two
-- index probes each. One SELECT, so the views below inline it into their plans.
CREATE FUNCTION fleetward.kpi_window(lvl text, s text, since date)
RETURNS TABLE (kpi_rows bigint, runs_started numeric, runs numeric, runs_succeeded numeric,
               latency_ms numeric, cost_usd numeric, tool_calls numeric, tool_errors numeric,
               reviewed bigint, approved bigint, rejected bigint, p95_latency_ms numeric,
               busy_s numeric, idle_s numeric)
LANGUAGE sql STABLE AS $$
    SELECT k1.kpi_rows - coalesce(k0.kpi_rows, 0), k1.runs_started - coalesce(k0.runs_started, 0),
           k1.runs - coalesce(k0.runs, 0), k1.runs_succeeded - coalesce(k0.runs_succeeded, 0),
           k1.latency_ms - coalesce(k0.latency_ms, 0), k1.cost_usd - coalesce(k0.cost_usd, 0),
           k1.tool_calls - coalesce(k0.tool_calls, 0),
           k1.tool_errors - coalesce(k0.tool_errors, 0),
           d1.reviewed - coalesce(d0.reviewed, 0), d1.approved - coalesce(d0.approved, 0),
           d1.rejected - coalesce(d0.rejected, 0), fleetward.p95_le(l1.runs_le, l0.runs_le),
           t1.busy_s - coalesce(t0.busy_s, 0), t1.idle_s - coalesce(t0.idle_s, 0)
    FROM (VALUES (lvl || '_runs', lvl || '_latency', lvl || '_reviews', lvl || '_time'))
             AS n(runs, latency, reviews, time)
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.runs AND c.scope = s
                       ORDER BY c.day DESC LIMIT 1) k1 ON true
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.runs AND c.scope = s AND c.day < since
                       ORDER BY c.day DESC LIMIT 1) k0 ON true
    LEFT JOIN LATERAL (SELECT c.runs_le FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.latency AND c.scope = s
                       ORDER BY c.day DESC LIMIT 1) l1 ON true
    LEFT JOIN LATERAL (SELECT c.runs_le FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.latency AND c.scope = s AND c.day < since
                       ORDER BY c.day DESC LIMIT 1) l0 ON true
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.reviews AND c.scope = s
                       ORDER BY c.day DESC LIMIT 1) d1 ON true
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.reviews AND c.scope = s AND c.day < since
                       ORDER BY c.day DESC LIMIT 1) d0 ON true
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.time AND c.scope = s
                       ORDER BY c.day DESC LIMIT 1) t1 ON true
    LEFT JOIN LATERAL (SELECT * FROM fleetward.kpi_cumulative c
                       WHERE c.kind = n.time AND c.scope = s AND c.day < since
                       ORDER BY c.day DESC LIMIT 1) t0 ON true
$$;

-- An agent's KPIs per period: its windows' sums, and its current hour.
CREATE VIEW fleet.kpi_agents AS
    SELECT a.agent_id, a.team, a.version, p.days, r.*
    FROM fleetward.agents a CROSS JOIN fleetward.kpi_periods p
    CROSS JOIN LATERAL fleetward.kpi_window('agent', a.agent_id, p.since) w
    LEFT JOIN fleetward.utilization h
           ON h.agent_id = a.agent_id AND h.hour >= p.since::timestamp AT TIME ZONE 'UTC'
    CROSS JOIN LATERAL fleetward.kpi_row(
        w.runs_started, w.runs, w.runs_succeeded, w.latency_ms, w.cost_usd, w.tool_calls,
        w.tool_errors, w.reviewed, w.approved, w.rejected, w.p95_latency_ms,
        coalesce(w.busy_s, 0) + coalesce(round(h.hour_busy_us / 1e6, 3), 0),
        coalesce(w.idle_s, 0) + coalesce(round(h.hour_idle_us / 1e6, 3), 0)) r;

-- A team's KPIs per period, from the team's running totals; the time of the agents in it now
-- (team_time, and their current hours). A team is listed for a period with kpi_daily rows or
-- reviews in it.
CREATE VIEW fleet.kpi_teams AS
    SELECT n.team, p.days, coalesce(h.agents, 0) AS agents, r.runs_started, r.runs, r.success_rate, r.avg_latency_ms,
           r.p95_latency_ms, r.cost_usd, r.cost_per_run_usd, r.tasks_done, r.cost_per_task_usd,
           r.reviewed, r.approval_rate, r.rework_rate, r.tool_calls, r.tool_error_rate,
           r.busy_s, r.idle_s, r.utilization
    FROM (SELECT DISTINCT c.scope AS team FROM fleetward.kpi_cumulative c
          WHERE c.kind IN ('team_runs', 'team_reviews')) n
    CROSS JOIN fleetward.kpi_periods p
    CROSS JOIN LATERAL fleetward.kpi_window('team', n.team, p.since) w
    LEFT JOIN (  -- the agents in each team now and their current hours, in one pass
        -- (each hour rounded to the ms as fleet.utilization_hourly shows it: in bigint, fast)
        SELECT a.team, q.days, count(*) AS agents,
               round(sum((h.hour_busy_us + 500) / 1000) / 1000.0, 3) AS busy_s,
               round(sum((h.hour_idle_us + 500) / 1000) / 1000.0, 3) AS idle_s
        FROM fleetward.agents a CROSS JOIN fleetward.kpi_periods q
        LEFT JOIN fleetward.utilization h
               ON h.agent_id = a.agent_id AND h.hour >= q.since::timestamp AT TIME ZONE 'UTC'
        GROUP BY a.team, q.days) h ON h.team = n.team AND h.days = p.days
    CROSS JOIN LATERAL fleetward.kpi_row(
        w.runs_started, w.runs, w.runs_succeeded, w.latency_ms, w.cost_usd, w.tool_calls,
        w.tool_errors, w.reviewed, w.approved, w.rejected, w.p95_latency_ms,
        coalesce(w.busy_s, 0) + coalesce(h.busy_s, 0),
        coalesce(w.idle_s, 0) + coalesce(h.idle_s, 0)) r
    WHERE coalesce(w.kpi_rows, 0) > 0 OR coalesce(w.reviewed, 0) > 0;
