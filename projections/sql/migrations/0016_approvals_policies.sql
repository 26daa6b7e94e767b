-- Human oversight (issue 15, parts 1, 2 and 5; DESIGN 3.10): approval requests and their
-- decisions (fw.approval.<id>.<actor>), tool policies (fw.policy.<id>.<actor>) and the tool
-- calls that broke them, in projection `approvals` (projections/approvals.py). Stream times.

CREATE TABLE fleetward.oversight_agents (         -- what the projection keeps of each agent
    agent_id      text PRIMARY KEY,
    team          text,                            -- null until it registers
    risk_class    text,
    status        text NOT NULL,                   -- projections/lifecycle.py
    paused_by     text,
    registered_by text,
    last_seq      bigint NOT NULL
);

CREATE TABLE fleetward.policies (
    policy_id       text PRIMARY KEY,              -- schemas.ids.policy_id(scope, scope_id)
    scope           text NOT NULL,                 -- agent, team, risk
    scope_id        text NOT NULL,
    version         bigint NOT NULL,               -- 1, 2, ...: the policy.set count
    allow           text[] NOT NULL,
    deny            text[] NOT NULL,
    approve         text[] NOT NULL,
    default_verdict text NOT NULL,                 -- allow, deny, approve
    max_cost_usd    double precision,              -- USD per call (bounds: <= 1,000,000); null: none
    reason          text NOT NULL,
    set_by          text NOT NULL,
    set_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    last_seq        bigint NOT NULL
);
CREATE UNIQUE INDEX ON fleetward.policies (scope, scope_id);

CREATE TABLE fleetward.approvals (
    approval_id    text PRIMARY KEY,
    agent          text NOT NULL,
    team           text,                           -- the agent's when it asked
    risk_class     text,
    kind           text NOT NULL,                  -- tool_call, deliverable, action
    name           text NOT NULL,
    summary        text NOT NULL,
    arguments      jsonb NOT NULL,
    risk           text NOT NULL,
    task           text,
    run            text,
    on_expiry      text NOT NULL,                  -- deny, wait
    requested_at   timestamptz NOT NULL,
    deadline_at    timestamptz NOT NULL,           -- escalated then, when still open
    expires_at     timestamptz NOT NULL,           -- denied then (on_expiry deny)
    state          text NOT NULL,                  -- open, granted, denied
    decided_by     text,
    decided_at     timestamptz,
    reason         text NOT NULL,
    expired        boolean NOT NULL,
    policy_id      text,                           -- the policy in force at the decision
    policy_version bigint,
    used_by        text,                           -- the tool.called that used the grant
    last_seq       bigint NOT NULL
);
CREATE INDEX ON fleetward.approvals (state, requested_at);
CREATE INDEX ON fleetward.approvals (agent);

CREATE TABLE fleetward.policy_violations (
    violation_id   text PRIMARY KEY,               -- the tool.called event's id
    agent          text NOT NULL,
    tool           text NOT NULL,
    kind           text NOT NULL,                  -- denied, unapproved, over_cap
    detail         text NOT NULL,
    policy_id      text,
    policy_version bigint,
    approval       text,
    cost_usd       double precision NOT NULL,
    max_cost_usd   double precision,
    risk_class     text,
    task           text,
    run            text,
    escalation_id  text NOT NULL,
    tier           text NOT NULL,
    at             timestamptz NOT NULL,
    seq            bigint NOT NULL
);
CREATE INDEX ON fleetward.policy_violations (agent, at);
CREATE INDEX ON fleetward.policy_violations (at);

CREATE VIEW fleet.approvals AS
    SELECT approval_id, agent, kind, name, summary, arguments, risk, task, run, team, risk_class,
           state, state = 'open' AS open, requested_at, deadline_at, expires_at, on_expiry,
           state = 'open' AND now() > deadline_at AS overdue,
           coalesce(decided_at, now()) - requested_at AS age,
           decided_by, decided_at, reason, expired, policy_id, policy_version, used_by
    FROM fleetward.approvals;

CREATE VIEW fleet.policies AS
    SELECT policy_id, scope, scope_id, version, allow, deny, approve, default_verdict,
           max_cost_usd, reason, set_by, set_at, created_at
    FROM fleetward.policies;

CREATE VIEW fleet.policy_violations AS
    SELECT violation_id, agent, tool, kind, detail, policy_id, policy_version, approval, cost_usd,
           max_cost_usd, risk_class, task, run, escalation_id, tier, at
    FROM fleetward.policy_violations;
