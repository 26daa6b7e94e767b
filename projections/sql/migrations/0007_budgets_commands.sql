-- Every Fleetward subject has a reader that admits it (issue 11, item 6): budgets (projection
-- `budgets`, subjects fw.budget.<id> of FW_EVENTS) and commands to agents (projection
-- `commands`, stream FW_COMMANDS), with their public views. Before, nothing read these
-- subjects: what was published there was never applied, dead-lettered or counted.

CREATE TABLE fleetward.budgets (
    budget_id     text PRIMARY KEY,
    scope         text NOT NULL,                 -- agent, team, org
    scope_id      text NOT NULL,
    budget_window text NOT NULL,                 -- day, month, lifetime (`window` is reserved)
    limit_usd     numeric NOT NULL,
    warn_at       double precision NOT NULL,     -- share of the limit that warns, (0, 1]
    set_by        text NOT NULL,
    set_at        timestamptz NOT NULL,          -- the latest budget.set (stream time)
    created_at    timestamptz NOT NULL,          -- the first
    last_seq      bigint NOT NULL
);
CREATE INDEX ON fleetward.budgets (scope, scope_id);

CREATE VIEW fleet.budgets AS
    SELECT budget_id, scope, scope_id, budget_window, limit_usd, warn_at, set_by, set_at,
           created_at
    FROM fleetward.budgets;

CREATE TABLE fleetward.commands (
    command_id text PRIMARY KEY,                 -- the event id
    agent      text NOT NULL,
    command    text NOT NULL,                    -- pause, resume, wake, review_feedback, approval
    reason     text NOT NULL,
    task       text,
    payload    jsonb NOT NULL,
    issued_by  text NOT NULL,
    issued_at  timestamptz NOT NULL,             -- stream time
    seq        bigint NOT NULL                   -- its sequence in FW_COMMANDS
);
CREATE INDEX ON fleetward.commands (agent, issued_at);

CREATE VIEW fleet.commands AS
    SELECT command_id, agent, command, reason, task, payload, issued_by, issued_at
    FROM fleetward.commands;
