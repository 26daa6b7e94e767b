-- Budgets you can read (issue 14, part 1): fleet.budgets shows each budget's spend in its
-- current window, what remains and its state. Spent is summed on read from the spend
-- projection's rows of the budget's scope (no second copy of the money):
--   agent   fleetward.spend_daily by agent_id, day   (its primary key)
--   team    fleetward.spend_daily by team, day       (its index on (team, day))
--   project fleetward.spend_task_daily of the project's tasks (index on tasks (project), 0014)
--   org     fleetward.spend_daily by day             (the index below)
-- The window is the budget's current one by the clock of the reading transaction, in UTC days
-- (the days the spend rows keep by the stream's time of record): today, this month, or ever.
-- reserved_usd is 0 until reservations exist (issue 14, parts 3-4). Budgets set before this
-- migration get their token limit (none) as they are; `limit_tokens` came with this release.

ALTER TABLE fleetward.budgets
    ADD COLUMN limit_tokens bigint,                      -- null: no token limit
    ADD COLUMN reserved_usd numeric NOT NULL DEFAULT 0;  -- 0 until reservations exist

CREATE INDEX ON fleetward.spend_daily (day);

DROP VIEW fleet.budgets;
CREATE VIEW fleet.budgets AS
    SELECT b.budget_id, b.scope, b.scope_id, b.budget_window, w.window_start,
           b.limit_usd, s.spent_usd, b.reserved_usd,
           b.limit_usd - s.spent_usd - b.reserved_usd AS remaining_usd,
           b.limit_tokens, s.spent_tokens, b.limit_tokens - s.spent_tokens AS remaining_tokens,
           b.warn_at,
           CASE WHEN s.spent_usd >= b.limit_usd OR s.spent_tokens >= b.limit_tokens
                THEN 'exhausted'
                WHEN s.spent_usd >= b.limit_usd * b.warn_at::numeric
                  OR s.spent_tokens >= b.limit_tokens * b.warn_at::numeric
                THEN 'warning'
                ELSE 'ok' END AS state,
           b.set_by, b.set_at, b.created_at
    FROM fleetward.budgets b
    CROSS JOIN LATERAL (
        SELECT CASE b.budget_window
                   WHEN 'day' THEN (now() AT TIME ZONE 'UTC')::date
                   WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE 'UTC')::date
               END AS window_start  -- null: lifetime
    ) w
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(x.cost), 0) AS spent_usd, coalesce(sum(x.tokens), 0) AS spent_tokens
        FROM (
            SELECT d.model_cost_usd + d.tool_cost_usd AS cost, d.tokens_in + d.tokens_out AS tokens
            FROM fleetward.spend_daily d
            WHERE b.scope = 'agent' AND d.agent_id = b.scope_id
              AND d.day >= coalesce(w.window_start, '-infinity'::date)
            UNION ALL
            SELECT d.model_cost_usd + d.tool_cost_usd, d.tokens_in + d.tokens_out
            FROM fleetward.spend_daily d
            WHERE b.scope = 'team' AND d.team = b.scope_id
              AND d.day >= coalesce(w.window_start, '-infinity'::date)
            UNION ALL
            SELECT d.model_cost_usd + d.tool_cost_usd, d.tokens_in + d.tokens_out
            FROM fleetward.tasks t JOIN fleetward.spend_task_daily d ON d.task_id = t.task_id
            WHERE b.scope = 'project' AND t.project = b.scope_id
              AND d.day >= coalesce(w.window_start, '-infinity'::date)
            UNION ALL
            SELECT d.model_cost_usd + d.tool_cost_usd, d.tokens_in + d.tokens_out
            FROM fleetward.spend_daily d
            WHERE b.scope = 'org' AND d.day >= coalesce(w.window_start, '-infinity'::date)
        ) x
    ) s;
