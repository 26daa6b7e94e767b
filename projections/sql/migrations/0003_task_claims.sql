-- Claims judged by the task board: what it knows of each agent, and when a task last moved.

CREATE TABLE fleetward.task_agents (
    agent_id             text PRIMARY KEY,
    roles                text[] NOT NULL,
    status               text NOT NULL,
    max_concurrent_tasks integer NOT NULL,
    held                 integer NOT NULL     -- tasks it holds now (in_progress or blocked)
);

ALTER TABLE fleetward.tasks ADD COLUMN last_progress_at timestamptz;

CREATE OR REPLACE VIEW fleet.tasks AS
    SELECT t.task_id, t.project, t.title, t.description, t.priority, t.status, t.assignee,
           t.claim_epoch, t.lease_s, t.depends_on,
           EXISTS (SELECT 1 FROM unnest(t.depends_on) AS d(task_id)
                   LEFT JOIN fleetward.tasks dep ON dep.task_id = d.task_id
                   WHERE dep.status IS DISTINCT FROM 'done') AS waiting_on_dependencies,
           t.required_role, t.sla_s, t.review_rounds, t.rework_count, t.deliverable_version,
           t.blocked_reason, t.created_by, t.created_at, t.updated_at, t.claimed_at,
           t.submitted_at, t.done_at, t.last_progress_at
    FROM fleetward.tasks t;
