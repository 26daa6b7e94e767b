"""The operator CLI, ``fleetward``: one module per command group. Every failure an operator can
fix is one line and a non-zero exit."""
