-- Contract v2, subjects carry their actor: the board's verdicts go to the outbox on
-- fw.task.<task>.<actor>, those stored before on fw.task.<task>. The watchdog's start looks up
-- the verdicts of a task (query watchdog_tasks) by its id: the third token of either form (ids
-- hold no '.'), so the index of 0010 (by the whole subject) gives way to one by that token.
DROP INDEX fleetward.outbox_task_verdicts;
CREATE INDEX outbox_task_verdicts_by_task ON fleetward.outbox (split_part(subject, '.', 3))
    WHERE subject LIKE 'fw.task.%';
