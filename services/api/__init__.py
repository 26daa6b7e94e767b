"""Request/reply answers served from the projections, for agents that have no Postgres
(subjects ``fw.api.*``, named in ``fleetward.schemas.subjects``)."""
