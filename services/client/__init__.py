"""The Python client: the agent SDK and the operator client. NATS only, so an agent team can
``pip install fleetward`` without Postgres or server binaries.

Invariants:
- Imports nothing that needs Postgres, the projector or the server binaries (``make lint``).
- A task's state is judged by the same pure fold as the task board (``projections.tasks``).
"""
