"""Which runners a projector process starts for utilization when FW_HEARTBEATS is partitioned
(schemas/partitions.py): one per heartbeat partition, each with its own durable consumer
(``fw_utilization_p<i>of<n>``, filtered to ``fw.hb.<i>.>``), checkpoint and lease.

- ``fleetward projector`` (no ``--partition``) on a stream stored in ``n > 1`` partitions runs
  all ``n`` partition runners; on one stored unpartitioned, ``utilization`` as always.
- ``fleetward projector --partition i/n`` runs partition ``i`` alone, nothing else: the other
  projections run in a projector without ``--partition``, whose runner of partition ``i`` then
  stands by (one lease per partition), as any second process does.
- ``n`` must be the stream's: a process of another count would read tokens the server does not
  make; it is refused, naming the stream's count.
"""

from __future__ import annotations

from fleetward.projections import Projection
from fleetward.projections.utilization import Utilization, partition
from fleetward.schemas.streams import HEARTBEATS_STREAM
from fleetward.services.errors import FleetwardError


def expand(
    chosen: tuple[Projection, ...], stored_in: int, only: tuple[int, int] | None = None
) -> tuple[Projection, ...]:
    """The projections to run: ``chosen`` with ``utilization`` replaced by its partitions when
    FW_HEARTBEATS is stored in ``stored_in > 1``; with ``only`` (``--partition i/n``) that one
    partition alone. ``FleetwardError`` when ``only``'s ``n`` is not ``stored_in``."""
    if only is not None:
        part, parts = only
        if parts != stored_in:
            raise FleetwardError(
                f"--partition {part}/{parts}: {HEARTBEATS_STREAM} is stored in {stored_in} "
                f"partition(s); use --partition i/{stored_in}, or set "
                f"FLEETWARD_HEARTBEAT_PARTITIONS={parts} on a stream not partitioned yet"
            )
        return (Utilization(),) if parts == 1 else (partition(part, parts),)
    if stored_in == 1:
        return chosen
    out: list[Projection] = []
    for p in chosen:
        if type(p) is Utilization:
            out.extend(partition(i, stored_in) for i in range(stored_in))
        else:
            out.append(p)
    return tuple(out)
