-- Reservations you can see (issue 14, part 4): one row per reservation and budget, kept by the
-- budgets projection (projections/budgets.py) from budget.reserved and budget.released. The
-- guard reads the open ones at start (no reading of the stream's history). Reservations
-- stored before this migration have no row: a release of one is then ignored, so
-- reserved_usd keeps it; `fleetward projections rebuild budgets` recounts them all.

CREATE TABLE fleetward.reservations (
    budget_id       text NOT NULL,
    reservation     text NOT NULL,
    agent_id        text NOT NULL,
    usd             numeric NOT NULL,               -- USD set aside
    expires_at      timestamptz NOT NULL,           -- released then if unsettled
    reserved_at     timestamptz NOT NULL,           -- stream time of its budget.reserved
    released_reason text,                           -- settled, expired, refused, returned; null: open
    released_at     timestamptz,
    last_seq        bigint NOT NULL,
    PRIMARY KEY (budget_id, reservation)
);
CREATE INDEX ON fleetward.reservations (budget_id) WHERE released_reason IS NULL;
CREATE INDEX ON fleetward.reservations (reservation);  -- an idempotency key is used once

CREATE VIEW fleet.reservations AS
    SELECT budget_id, reservation, agent_id, usd, expires_at, reserved_at,
           released_reason, released_at, released_reason IS NULL AS open
    FROM fleetward.reservations;
