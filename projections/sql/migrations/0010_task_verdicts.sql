-- The board's verdicts in the outbox by task subject: the watchdog's start looks for those of
-- the done tasks that a verdict may still send back (query watchdog_tasks).
CREATE INDEX outbox_task_verdicts ON fleetward.outbox (subject) WHERE subject LIKE 'fw.task.%';
