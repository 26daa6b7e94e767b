"""The Python client: the agent SDK and the operator client. NATS only, so an agent team can
``pip install fleetward`` without Postgres or server binaries.

``from fleetward.services.client import AgentClient`` is all an agent needs: the agent SDK
(``agent``), the operator client (``operator``) and the checks of its writes (``intents``), the
claim protocol they rest on (``claims``), the publish they share (``publisher``), a task read
straight from the stream (``taskstate``) and an operator's answer to an escalation
(``respond``).

Invariants:
- Imports nothing that needs Postgres, the projector or the server binaries (``make lint``).
- A task's state is judged by the same pure fold as the task board (``projections.tasks``).
"""

from fleetward.services.client.agent import AgentClient, ToolCall
from fleetward.services.client.approvals import (
    Approval,
    ApprovalExpired,
    ApprovalRefused,
    ToolDenied,
)
from fleetward.services.client.claims import Claim, ClaimLost
from fleetward.services.client.intents import IntentRefused
from fleetward.services.client.operator import FleetClient
from fleetward.services.jetstream.reads import StreamUnavailable

__all__ = [
    "AgentClient",  # an agent: register, heartbeat, claim, report, submit, read its inbox
    "Approval",  # a granted approval request (AgentClient.approval)
    "ApprovalExpired",  # a request no one decided by its second deadline
    "ApprovalRefused",  # a request denied, by whom and why
    "Claim",  # a task an agent holds, in one epoch
    "ClaimLost",  # a claim that did not take the task, and why
    "FleetClient",  # an operator or a service: tasks, agents' lifecycle, commands
    "IntentRefused",  # a FleetClient write that was not sent, and why (one line)
    "StreamUnavailable",  # a read that found no stream leader to answer it for 10 s
    "ToolCall",  # what one tool call reports (AgentClient.tool)
    "ToolDenied",  # a tool call its policy refuses (AgentClient.tool)
]
