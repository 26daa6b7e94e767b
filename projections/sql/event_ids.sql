-- Named queries of the event-id ledger (services/projector/ledger.py; migration 0006).

-- name: event_ids_first
-- The first sequence recorded for each of these event ids of a stream ($2 kinds, $3 ids): one
-- index probe per id (LIMIT keeps the planner from a hash join over the whole ledger, which a
-- plan cached while the ledger was small would otherwise keep doing as it grows).
SELECT e.kind, e.id, e.seq
FROM unnest($2::text[], $3::text[]) AS i(kind, id)
CROSS JOIN LATERAL (
    SELECT kind, id, seq FROM fleetward.event_ids
    WHERE stream = $1 AND kind = i.kind AND id = i.id LIMIT 1
) e;

-- name: event_ids_record
-- Record the first sequence of event ids ($2 kinds, $3 ids, $4 sequences), keeping the least;
-- in key order, so that two writers of the same ids lock them in one order (no deadlock).
INSERT INTO fleetward.event_ids AS e (stream, kind, id, seq)
SELECT $1, i.kind, i.id, i.seq FROM unnest($2::text[], $3::text[], $4::bigint[]) AS i(kind, id, seq)
ORDER BY i.kind, i.id
ON CONFLICT (stream, kind, id) DO UPDATE SET seq = EXCLUDED.seq WHERE EXCLUDED.seq < e.seq;
