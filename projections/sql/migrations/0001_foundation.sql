-- Fleetward foundation: internal tables (schema fleetward) and the public read contract
-- (views in schema fleet). Internal tables may change; the views are the promise.

CREATE SCHEMA IF NOT EXISTS fleetward;
CREATE SCHEMA IF NOT EXISTS fleet;

-- ---- pipeline bookkeeping ---------------------------------------------------------------------

CREATE TABLE fleetward.checkpoints (
    projection  text PRIMARY KEY,
    stream      text NOT NULL,
    seq         bigint NOT NULL DEFAULT 0,       -- last stream sequence applied
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleetward.dead_letters (
    projection  text NOT NULL,
    stream      text NOT NULL,
    seq         bigint NOT NULL,
    subject     text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    raw         bytea NOT NULL,
    stream_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream, seq)
);

-- ---- agent registry ---------------------------------------------------------------------------

CREATE TABLE fleetward.agents (
    agent_id             text PRIMARY KEY,
    name                 text NOT NULL,
    owner                text NOT NULL,
    team                 text NOT NULL,
    purpose              text NOT NULL,
    risk_class           text NOT NULL,
    version              text NOT NULL,
    status               text NOT NULL,
    status_reason        text NOT NULL,
    heartbeat_interval_s double precision NOT NULL,
    roles                text[] NOT NULL,
    max_concurrent_tasks integer NOT NULL,
    registered_at        timestamptz,
    updated_at           timestamptz NOT NULL,
    last_seq             bigint NOT NULL
);
CREATE INDEX ON fleetward.agents (team);

-- ---- task board -------------------------------------------------------------------------------

CREATE TABLE fleetward.tasks (
    task_id             text PRIMARY KEY,
    project             text NOT NULL,
    title               text NOT NULL,
    description         text NOT NULL,
    priority            text NOT NULL,
    status              text NOT NULL,
    assignee            text,
    claim_epoch         integer NOT NULL,
    lease_s             double precision,
    depends_on          text[] NOT NULL,
    required_role       text,
    sla_s               double precision,
    review_rounds       integer NOT NULL,
    rework_count        integer NOT NULL,
    deliverable_version integer NOT NULL,
    blocked_reason      text,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    claimed_at          timestamptz,
    submitted_at        timestamptz,
    done_at             timestamptz,
    last_seq            bigint NOT NULL
);
CREATE INDEX ON fleetward.tasks (assignee);
CREATE INDEX ON fleetward.tasks (status, priority);

CREATE TABLE fleetward.deliverables (
    task_id      text NOT NULL,
    version      integer NOT NULL,
    agent        text NOT NULL,
    epoch        integer NOT NULL,
    kind         text NOT NULL,
    sha256       text NOT NULL,
    uri          text,
    content      text NOT NULL,
    submitted_at timestamptz NOT NULL,
    seq          bigint NOT NULL,
    PRIMARY KEY (task_id, version)
);

CREATE TABLE fleetward.task_rejections (
    task_id  text NOT NULL,
    seq      bigint NOT NULL,
    event_id text NOT NULL,
    type     text NOT NULL,
    actor    text NOT NULL,
    reason   text NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- ---- utilization ------------------------------------------------------------------------------

CREATE TABLE fleetward.utilization (
    agent_id     text PRIMARY KEY,
    state        text NOT NULL,
    current_task text,
    message      text NOT NULL,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    busy_us      bigint NOT NULL,
    idle_us      bigint NOT NULL,
    heartbeats   bigint NOT NULL,
    last_seq     bigint NOT NULL
);

CREATE TABLE fleetward.utilization_hourly (
    agent_id   text NOT NULL,
    hour       timestamptz NOT NULL,
    busy_us    bigint NOT NULL,
    idle_us    bigint NOT NULL,
    heartbeats bigint NOT NULL,
    PRIMARY KEY (agent_id, hour)
);

-- ---- spend ------------------------------------------------------------------------------------

CREATE TABLE fleetward.spend_agents (
    agent_id text PRIMARY KEY,
    team     text NOT NULL
);

CREATE TABLE fleetward.spend_daily (
    agent_id       text NOT NULL,
    day            date NOT NULL,
    team           text NOT NULL,
    model_cost_usd numeric NOT NULL,
    tool_cost_usd  numeric NOT NULL,
    tokens_in      bigint NOT NULL,
    tokens_out     bigint NOT NULL,
    runs           bigint NOT NULL,
    runs_failed    bigint NOT NULL,
    tool_calls     bigint NOT NULL,
    tool_errors    bigint NOT NULL,
    spend_events   bigint NOT NULL,
    PRIMARY KEY (agent_id, day)
);
CREATE INDEX ON fleetward.spend_daily (team, day);

-- ---- the public read contract: schema fleet ---------------------------------------------------

CREATE VIEW fleet.agents AS
    SELECT agent_id, name, owner, team, purpose, risk_class, version, status, status_reason,
           heartbeat_interval_s, roles, max_concurrent_tasks, registered_at, updated_at
    FROM fleetward.agents;

CREATE VIEW fleet.tasks AS
    SELECT t.task_id, t.project, t.title, t.description, t.priority, t.status, t.assignee,
           t.claim_epoch, t.lease_s, t.depends_on,
           EXISTS (SELECT 1 FROM unnest(t.depends_on) AS d(task_id)
                   LEFT JOIN fleetward.tasks dep ON dep.task_id = d.task_id
                   WHERE dep.status IS DISTINCT FROM 'done') AS waiting_on_dependencies,
           t.required_role, t.sla_s, t.review_rounds, t.rework_count, t.deliverable_version,
           t.blocked_reason, t.created_by, t.created_at, t.updated_at, t.claimed_at,
           t.submitted_at, t.done_at
    FROM fleetward.tasks t;

CREATE VIEW fleet.deliverables AS
    SELECT task_id, version, agent, epoch, kind, sha256, uri, content, submitted_at
    FROM fleetward.deliverables;

CREATE VIEW fleet.task_rejections AS
    SELECT task_id, seq, event_id, type, actor, reason, at FROM fleetward.task_rejections;

CREATE VIEW fleet.utilization AS
    SELECT u.agent_id, u.state, u.current_task, u.message, u.first_seen, u.last_seen,
           round(u.busy_us / 1e6, 3) AS busy_s, round(u.idle_us / 1e6, 3) AS idle_s,
           CASE WHEN u.busy_us + u.idle_us > 0
                THEN u.busy_us::double precision / (u.busy_us + u.idle_us) END AS utilization,
           u.heartbeats,
           (SELECT count(*) FROM fleetward.tasks t
             WHERE t.assignee = u.agent_id AND t.status = 'done') AS tasks_done
    FROM fleetward.utilization u;

CREATE VIEW fleet.utilization_hourly AS
    SELECT agent_id, hour, round(busy_us / 1e6, 3) AS busy_s, round(idle_us / 1e6, 3) AS idle_s,
           heartbeats
    FROM fleetward.utilization_hourly;

CREATE VIEW fleet.spend_daily AS
    SELECT agent_id, team, day, model_cost_usd + tool_cost_usd AS cost_usd, model_cost_usd,
           tool_cost_usd, tokens_in, tokens_out, runs, runs_failed, tool_calls, tool_errors
    FROM fleetward.spend_daily;

CREATE VIEW fleet.spend_team_daily AS
    SELECT team, day, sum(model_cost_usd + tool_cost_usd) AS cost_usd,
           sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(runs) AS runs,
           count(DISTINCT agent_id) AS agents
    FROM fleetward.spend_daily GROUP BY team, day;

CREATE VIEW fleet.dead_letters AS
    SELECT projection, stream, seq, subject, reason, detail, raw, stream_time, recorded_at
    FROM fleetward.dead_letters;

CREATE VIEW fleet.projections AS
    SELECT projection, stream, seq AS checkpoint, updated_at FROM fleetward.checkpoints;
