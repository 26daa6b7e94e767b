"""Connections: to the servers named in the settings, or to embedded ones started for a machine
that has nothing installed. Every failure is a ``FleetwardError`` that says what to fix."""
