-- Spend you can attribute (issue 14, part 2): the projection `spend` also keeps its money per
-- model and day, per task and day, and per run (projections/attribution.py), with exact sums.
-- A task's project is the task board's (from its task.created): the views join fleet.tasks, so
-- the spend projection reads no task events. The new tables start empty: spend recorded before
-- this migration is attributed once the projection is rebuilt (`fleetward projections rebuild
-- spend`).

CREATE TABLE fleetward.spend_model_daily (
    model        text NOT NULL,
    day          date NOT NULL,                 -- UTC day of the stream time
    cost_usd     numeric NOT NULL,              -- sum of spend.recorded.cost_usd
    tokens_in    numeric NOT NULL,
    tokens_out   numeric NOT NULL,
    spend_events bigint NOT NULL,
    PRIMARY KEY (model, day)
);

CREATE TABLE fleetward.spend_task_daily (
    task_id        text NOT NULL,               -- the task a spend or tool call names
    day            date NOT NULL,
    model_cost_usd numeric NOT NULL,
    tool_cost_usd  numeric NOT NULL,
    tokens_in      numeric NOT NULL,
    tokens_out     numeric NOT NULL,
    runs           bigint NOT NULL,             -- run.started naming the task
    tool_calls     bigint NOT NULL,
    tool_errors    bigint NOT NULL,
    spend_events   bigint NOT NULL,
    PRIMARY KEY (task_id, day)
);

CREATE TABLE fleetward.spend_runs (
    agent_id       text NOT NULL,
    run_id         text NOT NULL,               -- run ids are the agent's own
    task_id        text,                        -- its run.started's task, else the first named
    started_at     timestamptz,                 -- stream time; null until its run.started
    finished_at    timestamptz,
    outcome        text,                        -- succeeded, failed, cancelled; null while open
    model_cost_usd numeric NOT NULL,
    tool_cost_usd  numeric NOT NULL,
    tokens_in      numeric NOT NULL,
    tokens_out     numeric NOT NULL,
    tool_calls     bigint NOT NULL,
    tool_errors    bigint NOT NULL,
    spend_events   bigint NOT NULL,
    PRIMARY KEY (agent_id, run_id)
);

-- a project's tasks, for its spend (fleet.spend_project_daily and project budgets); a task's
-- project never changes, so the board's updates stay HOT
CREATE INDEX ON fleetward.tasks (project);

CREATE VIEW fleet.spend_model_daily AS
    SELECT model, day, cost_usd, tokens_in, tokens_out, spend_events
    FROM fleetward.spend_model_daily;

CREATE VIEW fleet.spend_tasks AS
    SELECT s.task_id, t.project,
           sum(s.model_cost_usd + s.tool_cost_usd) AS cost_usd,
           sum(s.model_cost_usd) AS model_cost_usd, sum(s.tool_cost_usd) AS tool_cost_usd,
           sum(s.tokens_in) AS tokens_in, sum(s.tokens_out) AS tokens_out, sum(s.runs) AS runs,
           sum(s.tool_calls) AS tool_calls, sum(s.tool_errors) AS tool_errors,
           sum(s.spend_events) AS spend_events, min(s.day) AS first_day, max(s.day) AS last_day
    FROM fleetward.spend_task_daily s LEFT JOIN fleetward.tasks t ON t.task_id = s.task_id
    GROUP BY s.task_id, t.project;

CREATE VIEW fleet.spend_project_daily AS
    SELECT t.project, s.day,
           sum(s.model_cost_usd + s.tool_cost_usd) AS cost_usd,
           sum(s.model_cost_usd) AS model_cost_usd, sum(s.tool_cost_usd) AS tool_cost_usd,
           sum(s.tokens_in) AS tokens_in, sum(s.tokens_out) AS tokens_out,
           count(*) AS tasks
    FROM fleetward.spend_task_daily s LEFT JOIN fleetward.tasks t ON t.task_id = s.task_id
    GROUP BY t.project, s.day;

CREATE VIEW fleet.spend_runs AS
    SELECT agent_id, run_id, task_id, started_at, finished_at, outcome,
           model_cost_usd + tool_cost_usd AS cost_usd, model_cost_usd, tool_cost_usd,
           tokens_in, tokens_out, tool_calls, tool_errors, spend_events
    FROM fleetward.spend_runs;
