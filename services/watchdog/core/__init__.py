"""The watchdog's pure judging: liveness, leases, detectors and incidents.

Invariant: nothing here does I/O or reads a clock; the service feeds events with their stream
time and asks what is due at an explicit ``now``. ``make lint`` checks the imports.
"""
