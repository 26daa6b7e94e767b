"""The audit trail you can verify (DESIGN 3.11; issue 15 parts 3 and 4).

- ``chain``: pure. The stream chain (chain(n) = sha256(chain(n-1) || stored bytes of n), from
  ``GENESIS`` at sequence 0) that seals commit to, and the file format: every line ends with
  its hash, sha256(previous line's hash || the line without it), so one changed, dropped or
  moved line breaks the file at that line.
- ``read``: the stored messages of FW_EVENTS in stream order, by batch direct gets (services)
  or message gets, many in flight (people, whose credentials allow no direct get).
- ``export``: ``fleetward audit export``; ``verify``: ``fleetward audit verify``.
- ``sealer``: the auditor service (``svc:audit``), which follows FW_EVENTS and publishes the
  chain's head (``audit.sealed``) once per period, once however many replicas run.

Invariants: the chain covers only what the stream stores (sequence, time of record, subject,
bytes), so every version of Fleetward computes the same heads; FW_EVENTS denies deletes and
purges, so its sequences have no holes but at the front (retention).
"""
