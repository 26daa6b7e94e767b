-- A paused agent's spend is kept and flagged (issue 12, item 5): the spend projection follows
-- each agent's status (the registry's state machine) and counts, per day, what an agent
-- reported while paused or retired.

ALTER TABLE fleetward.spend_agents ADD COLUMN status text NOT NULL DEFAULT 'active';
UPDATE fleetward.spend_agents s SET status = a.status
  FROM fleetward.agents a WHERE a.agent_id = s.agent_id;

ALTER TABLE fleetward.spend_daily
    ADD COLUMN paused_cost_usd numeric NOT NULL DEFAULT 0,   -- model + tool cost while paused
    ADD COLUMN paused_events   bigint  NOT NULL DEFAULT 0;   -- runs, tool calls, spends then

DROP VIEW fleet.spend_daily;
CREATE VIEW fleet.spend_daily AS
    SELECT agent_id, team, day, model_cost_usd + tool_cost_usd AS cost_usd, model_cost_usd,
           tool_cost_usd, tokens_in, tokens_out, runs, runs_failed, tool_calls, tool_errors,
           paused_cost_usd, paused_events
    FROM fleetward.spend_daily;
