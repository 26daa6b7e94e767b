"""Fleetward, the control plane for a workforce of AI agents.

Everything importable lives under ``fleetward.``, so installing Fleetward (or only its agent
SDK) never puts a top-level ``schemas``, ``services`` or ``projections`` into a user's
environment. In the repository the three packages sit at the top level, as the project's
shape asks; ``fleetward/`` holds relative links to them, and the wheel copies them in:

- ``fleetward.schemas``: the event contract (pure: types, bounds, wire names);
- ``fleetward.projections``: pure folds from events to rows, and their SQL;
- ``fleetward.services``: everything that does I/O (see ``fleetward/services/__init__.py``).
"""
