"""Errors an operator can act on. The CLI prints ``str(error)`` as one line and exits non-zero."""


class FleetwardError(Exception):
    """A problem with configuration or the environment, stated as what to fix."""


class StreamConflict(FleetwardError):
    """An existing stream's settings differ from what Fleetward needs."""


class ApiError(FleetwardError):
    """A request to the services' API (``fw.api.*``) got no answer, or an answer with an error."""
