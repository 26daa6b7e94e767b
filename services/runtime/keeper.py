"""The keeper of an embedded Postgres: ``python -m fleetward.services.runtime.keeper PGDATA``.

``pg_ctl`` daemonizes Postgres (the postmaster's parent is init, in a session of its own), so
no signal reaches it when the process that started it dies. The keeper closes that gap: the
owner starts it with the read end of a pipe as its standard input and keeps the write end
(never inherited by anything else). The kernel closes the write end when the owner exits, by
any means, SIGKILL included; the keeper then reads end-of-file and stops the Postgres of
PGDATA with a fast shutdown (``orphans.stop_postgres``), and exits. A clean stop takes the
same path: the owner closes the pipe and waits for the keeper.

The keeper runs in a session of its own (a terminal's Ctrl-C or hang-up reaches the owner, not
it) and ignores SIGINT and SIGHUP anyway. If the keeper itself is killed, the next owner of the
folder stops the orphaned Postgres at its start (``orphans.stop_orphans``).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from fleetward.services.runtime.orphans import stop_postgres


def main(argv: list[str]) -> int:
    """Wait for end-of-file on standard input, then stop the Postgres of ``argv[1]``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pgdata = Path(argv[1])
    while sys.stdin.buffer.read(4096):
        pass  # the owner writes nothing; only the end matters
    stop_postgres(pgdata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
