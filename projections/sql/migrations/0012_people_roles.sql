-- People's roles (issue 13, DESIGN 3.7): role.granted / role.revoked on fw.person.<name>.<actor>
-- (projection `people`). One row per person and role ever granted; `held` is false once
-- revoked. The stream keeps every change: who could do what at any time is in FW_EVENTS.

CREATE TABLE fleetward.roles (
    person     text NOT NULL,                    -- user:<person>
    role       text NOT NULL,                    -- viewer, operator, reviewer, approver, budget-admin, admin
    held       boolean NOT NULL,
    changed_by text NOT NULL,                    -- the admin (or svc:auth) who changed it last
    changed_at timestamptz NOT NULL,             -- stream time of that change
    reason     text NOT NULL,
    last_seq   bigint NOT NULL,
    PRIMARY KEY (person, role)
);

CREATE VIEW fleet.roles AS
    SELECT person, role, held, changed_by, changed_at, reason
    FROM fleetward.roles;
