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

-- name: kpis_empty
-- The KPI benchmark's history gone, for the next run's.
TRUNCATE fleetward.agents, fleetward.agent_versions, fleetward.kpi_daily,
         fleetward.kpi_latency_daily, fleetward.deliverables, fleetward.utilization_hourly;
