-- Named queries of the event-id ledger (services/projector/ledger.py; migration 0006).

-- name: event_ids_first
-- The first sequence recorded for each of these event ids of a stream ($2 kinds, $3 ids).
SELECT e.kind, e.id, e.seq
FROM unnest($2::text[], $3::text[]) AS i(kind, id)
JOIN fleetward.event_ids e ON e.stream = $1 AND e.kind = i.kind AND e.id = i.id;

-- name: event_ids_record
-- Record the first sequence of event ids ($2 kinds, $3 ids, $4 sequences), keeping the least.
INSERT INTO fleetward.event_ids AS e (stream, kind, id, seq)
SELECT $1, i.kind, i.id, i.seq FROM unnest($2::text[], $3::text[], $4::bigint[]) AS i(kind, id, seq)
ON CONFLICT (stream, kind, id) DO UPDATE SET seq = EXCLUDED.seq WHERE EXCLUDED.seq < e.seq;
