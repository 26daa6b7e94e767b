"""The operator CLI, ``fleetward``: one module per command group. Every failure an operator can
fix is one line and a non-zero exit.

``main`` assembles the parser from the groups' ``Command``s (``command``) and dispatches;
``dev`` (dev, simulate), ``projector`` (projector, projections rebuild), ``watchdog``,
``fleet`` (status, agents, agent), ``tasks`` and ``escalations`` each contribute their commands;
``views`` renders what the read commands show."""
