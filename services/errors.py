"""Errors an operator can act on. The CLI prints ``str(error)`` as one line and exits non-zero."""


class FleetwardError(Exception):
    """A problem with configuration or the environment, stated as what to fix."""


class StreamConflict(FleetwardError):
    """An existing stream's settings differ from what Fleetward needs."""


class ApiError(FleetwardError):
    """A request to the services' API (``fw.api.*``) got no answer, or an answer with an error."""


class ApiRefused(ApiError):
    """The services' API answered, with an error (the reply's ``error``)."""


class ReservationRefused(ApiRefused):
    """The guard refused a reservation (``fw.api.budgets.reserve``): the agent is paused or
    retired, a budget covering it is exhausted or has too little left, or the guard is catching
    up. ``str()`` says which."""
