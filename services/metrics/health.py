"""The health of a service process: named checks, each saying whether its part can do its work
and, in words, why (DESIGN 1: "/healthz that tells the truth").

A part registers a check once (``HealthChecks.register(name, check)``); ``check()`` returns
``(ok, reason)`` at once, from state the part keeps (it must not wait on I/O: it runs on every
probe). GET /healthz (services/metrics/http.py) answers 200 when every check passes, else 503,
and always the verdicts as JSON, e.g.::

    {"ok": false, "checks": {"nats": {"ok": true, "reason": "connected"},
                             "watchdog": {"ok": false, "reason": "no judging round completed
                                          for 12.0s; last failure at tick: ..."}}}

For Kubernetes-style probes, /healthz is a readiness probe: it fails while the process cannot
do its work (NATS away, the watchdog not judging, ...), which a restart may not cure; use it as
a liveness probe only with a failure threshold longer than an outage you would rather wait out.
A check that raises counts as failing, its error as the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

Check = Callable[[], tuple[bool, str]]
"""() -> (ok, reason): whether a part of the process can do its work, and why (not)."""


@dataclass(frozen=True, slots=True)
class Report:
    """Every check's verdict, by name; ``ok`` when all passed (and when there are none)."""

    ok: bool
    checks: dict[str, tuple[bool, str]]

    def json(self) -> bytes:
        """The /healthz body: ``{"ok": ..., "checks": {name: {"ok": ..., "reason": ...}},
        "problems": ["<name>: <reason>", ...]}`` (the failing checks, for a quick read)."""
        checks = {n: {"ok": ok, "reason": why} for n, (ok, why) in self.checks.items()}
        problems = [f"{n}: {why}" for n, (ok, why) in self.checks.items() if not ok]
        return msgspec.json.encode({"ok": self.ok, "checks": checks, "problems": problems})


class HealthChecks:
    """The named health checks of one process. Calling it answers whether all pass, so it
    serves wherever a plain ``() -> bool`` health function is expected."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def register(self, name: str, check: Check) -> None:
        """Add ``check`` under ``name`` (e.g. ``nats``, ``projector``, ``watchdog``). Raises
        ``ValueError`` if the name is taken."""
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is registered already")
        self._checks[name] = check

    def report(self) -> Report:
        """Run every check, in name order."""
        verdicts: dict[str, tuple[bool, str]] = {}
        for name in sorted(self._checks):
            try:
                ok, reason = self._checks[name]()
            except Exception as exc:  # a broken check is a failing one, not a broken probe
                ok, reason = False, f"the check failed: {type(exc).__name__}: {exc}"
            verdicts[name] = (bool(ok), reason)
        return Report(all(ok for ok, _ in verdicts.values()), verdicts)

    def __call__(self) -> bool:
        return self.report().ok
