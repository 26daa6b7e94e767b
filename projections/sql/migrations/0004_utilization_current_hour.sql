-- Utilization: an agent's current hour lives on its own row, so a heartbeat writes one row
-- instead of two; fleetward.utilization_hourly keeps only hours that are over (they never change
-- again). The view fleet.utilization_hourly shows both, as before.

ALTER TABLE fleetward.utilization
    ADD COLUMN hour            timestamptz,
    ADD COLUMN hour_busy_us    bigint NOT NULL DEFAULT 0,
    ADD COLUMN hour_idle_us    bigint NOT NULL DEFAULT 0,
    ADD COLUMN hour_heartbeats bigint NOT NULL DEFAULT 0;

-- Move each agent's current hour (the hour of its last heartbeat, in UTC) onto its row.
UPDATE fleetward.utilization SET hour = date_trunc('hour', last_seen, 'UTC');
UPDATE fleetward.utilization u
   SET hour_busy_us = h.busy_us, hour_idle_us = h.idle_us, hour_heartbeats = h.heartbeats
  FROM fleetward.utilization_hourly h
 WHERE h.agent_id = u.agent_id AND h.hour = u.hour;
DELETE FROM fleetward.utilization_hourly h
 USING fleetward.utilization u
 WHERE h.agent_id = u.agent_id AND h.hour = u.hour;

ALTER TABLE fleetward.utilization
    ALTER COLUMN hour SET NOT NULL,
    ALTER COLUMN hour_busy_us DROP DEFAULT,
    ALTER COLUMN hour_idle_us DROP DEFAULT,
    ALTER COLUMN hour_heartbeats DROP DEFAULT;

CREATE OR REPLACE VIEW fleet.utilization_hourly AS
    SELECT agent_id, hour, round(busy_us / 1e6, 3) AS busy_s, round(idle_us / 1e6, 3) AS idle_s,
           heartbeats
    FROM fleetward.utilization_hourly
    UNION ALL
    SELECT agent_id, hour, round(hour_busy_us / 1e6, 3), round(hour_idle_us / 1e6, 3),
           hour_heartbeats
    FROM fleetward.utilization;
