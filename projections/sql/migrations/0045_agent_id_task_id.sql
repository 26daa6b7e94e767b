-- One name for an agent's and a task's id across the public views (issue 17, part 4): the views
-- that still called them `agent` and `task` call them `agent_id` and `task_id`, as every other
-- view (and the CLI's --json) does. Columns named for a role keep their names
-- (fleet.tasks.assignee, fleet.utilization.current_task, approved_by, ...).
--
-- Only the views change, in place: a view column renamed keeps its position, type and data, and
-- whatever reads it by reference (a view on a view) follows it, so nothing is dropped and
-- recreated here. The tables behind them (fleetward.*) keep `agent` and `task`, the events'
-- own field names: they are internal, and triggers and folds read them by those names.
-- ALTER VIEW ... RENAME COLUMN: PostgreSQL 13 or newer (Fleetward needs 14).

ALTER VIEW fleet.deliverables RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.deliverable_versions RENAME COLUMN agent TO agent_id;

ALTER VIEW fleet.escalations RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.escalations RENAME COLUMN task TO task_id;
ALTER VIEW fleet.escalations_open RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.escalations_open RENAME COLUMN task TO task_id;

ALTER VIEW fleet.commands RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.commands RENAME COLUMN task TO task_id;

ALTER VIEW fleet.approvals RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.approvals RENAME COLUMN task TO task_id;
ALTER VIEW fleet.policy_violations RENAME COLUMN agent TO agent_id;
ALTER VIEW fleet.policy_violations RENAME COLUMN task TO task_id;
