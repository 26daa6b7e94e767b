"""The bounds of the contract: every value an admitted event carries fits everywhere it goes. Pure.

One source: the field types of ``schemas/events.py`` are built from the constants and types
here; msgspec enforces them when admission decodes an event; the generated JSON Schema and
AsyncAPI documents carry them (``minimum``, ``maximum``, ``maxLength``, ``pattern``), so agents in
other languages see them; ``docs/events.md`` states the policy and shows the numeric table that
``contract.markdown_bounds`` renders from the event classes.

The policy:
- **Integers** fit the Postgres column they land in: ``integer`` (int4, ``INT4_MAX``) unless the
  column is ``bigint``. Per-event quantities that projections add up (tokens, cost) have a sane
  per-event bound, and their sums are kept in ``numeric`` (which cannot overflow); counters of
  events are ``bigint``, and no stream can hold 2^63 events.
- **Floats** are finite (a JSON number too large for a double, such as ``1e999``, is refused)
  and lie in a documented range, so no sum, product or conversion of admitted values overflows
  (``MAX_COST_USD`` keeps a day's or a month's spend far below the largest double).
- **Text** holds no NUL (U+0000): Postgres ``text`` and ``jsonb`` cannot store it. Lone UTF-16
  surrogates (``\\ud800``-``\\udfff`` escapes not in a pair) never become text at all: the JSON
  decoder refuses them (reason ``not_json``), so every string admitted can be encoded as UTF-8.
- **Ids and subject tokens** come from ``[A-Za-z0-9_-]{1,64}`` (``IDENT_PATTERN``).
- **Nesting**: a payload nests at most ``MAX_DEPTH`` arrays and objects, known fields or not
  (checked before decoding, see ``admission.too_deep``); JSON Schema cannot express this limit.
"""

from __future__ import annotations

import sys
from typing import Annotated, Final

from msgspec import Meta

# ---- limits -----------------------------------------------------------------------------------

INT4_MAX: Final = 2**31 - 1  # Postgres integer
INT8_MIN: Final = -(2**63)  # Postgres bigint
INT8_MAX: Final = 2**63 - 1
MAX_DEPTH: Final = 32  # arrays and objects inside one another, the event object included

MIN_PERIOD_S: Final = 0.1  # shortest heartbeat interval, lease or SLA
MAX_PERIOD_S: Final = 7 * 86_400.0  # longest heartbeat interval or lease: a week
MAX_SLA_S: Final = 366 * 86_400.0  # longest SLA: a year
MAX_DURATION_MS: Final = 30 * 86_400_000.0  # longest run latency or tool call: 30 days
MAX_TOKENS: Final = 1_000_000_000  # tokens in (or out) of one model call
MAX_COST_USD: Final = 1_000_000.0  # cost of one model or tool call
MAX_LIMIT_USD: Final = 1_000_000_000_000.0  # largest budget limit
# largest token limit of a budget: a quadrillion, below 2^53, so exact in every JSON number
MAX_LIMIT_TOKENS: Final = 1_000_000_000_000_000
MAX_FLOAT: Final = sys.float_info.max  # the largest finite double
MAX_WAIT_S: Final = 30 * 86_400.0  # longest wait for a person's approval: 30 days
MAX_LISTED: Final = 256  # tools one policy lists as allowed, denied or needing approval
MIN_SEAL_PERIOD_S: Final = 1.0  # the audit chain's shortest sealing period (tests)
MAX_SEAL_PERIOD_S: Final = 366 * 86_400.0  # ... and longest: a year

# ---- patterns ---------------------------------------------------------------------------------

# `(?!\n)$`: Python's `$` also matches before a final newline; ECMA's (JSON Schema's) does not.
IDENT_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}(?!\n)$"
ACTOR_PATTERN: Final = r"^((user|svc):[A-Za-z0-9_.@-]{1,64}|[A-Za-z0-9_-]{1,64})(?!\n)$"
NO_NUL: Final = r"^[^\x00]*$"  # any text but U+0000, which Postgres text and jsonb cannot hold
SHA256_PATTERN: Final = r"^[0-9a-f]{64}(?!\n)$"

# ---- field types ------------------------------------------------------------------------------

Ident = Annotated[str, Meta(pattern=IDENT_PATTERN, description="a subject-safe id")]
PERSON_PATTERN: Final = r"^[A-Za-z0-9_@-]{1,64}(?!\n)$"
PersonName = Annotated[
    str, Meta(pattern=PERSON_PATTERN, description="a person's name: one subject token")
]
Actor = Annotated[
    str, Meta(pattern=ACTOR_PATTERN, description="an agent id, 'user:<name>' or 'svc:<name>'")
]


def text(max_length: int) -> Meta:
    """Text of at most ``max_length`` characters, without NUL. The pattern is published in the
    schemas; admission checks it once per event (``admission.nul_at``), which costs far less
    than a regular expression per field."""
    return Meta(max_length=max_length, extra_json_schema={"pattern": NO_NUL})


ShortText = Annotated[str, text(200)]
Text = Annotated[str, text(8000)]
CorrText = Annotated[str, text(128)]
ContentText = Annotated[str, text(32000)]
UriText = Annotated[str, text(2000)]
Sha256 = Annotated[str, Meta(pattern=SHA256_PATTERN)]

Version = Annotated[int, Meta(ge=1, le=INT4_MAX)]
Epoch = Annotated[
    int,
    Meta(
        ge=1,
        le=INT4_MAX,
        description="claim epoch; each claim of a task opens the next one (stored as integer)",
    ),
]
CurrentEpoch = Annotated[
    int,
    Meta(
        ge=0,
        le=INT4_MAX,
        description="the task's current claim epoch; 0 before its first claim",
    ),
]
TaskLimit = Annotated[int, Meta(ge=1, le=INT4_MAX, description="stored as integer")]
Tokens = Annotated[int, Meta(ge=0, le=MAX_TOKENS, description="tokens of one model call")]
CostUsd = Annotated[float, Meta(ge=0, le=MAX_COST_USD, description="USD of one call")]
LimitUsd = Annotated[float, Meta(ge=0, le=MAX_LIMIT_USD)]
LimitTokens = Annotated[int, Meta(ge=0, le=MAX_LIMIT_TOKENS)]
DurationMs = Annotated[float, Meta(ge=0, le=MAX_DURATION_MS)]
PeriodS = Annotated[float, Meta(ge=MIN_PERIOD_S, le=MAX_PERIOD_S, description="seconds")]
SlaS = Annotated[float, Meta(ge=MIN_PERIOD_S, le=MAX_SLA_S, description="seconds")]
Percent = Annotated[float, Meta(ge=0, le=100)]
Share = Annotated[float, Meta(gt=0, le=1)]
WaitS = Annotated[float, Meta(ge=MIN_PERIOD_S, le=MAX_WAIT_S, description="seconds")]
ToolList = Annotated[tuple[ShortText, ...], Meta(max_length=MAX_LISTED)]

Int8 = Annotated[int, Meta(ge=INT8_MIN, le=INT8_MAX)]
StreamSeq = Annotated[int, Meta(ge=0, le=INT8_MAX, description="a stream sequence (bigint)")]
SealPeriodS = Annotated[
    float, Meta(ge=MIN_SEAL_PERIOD_S, le=MAX_SEAL_PERIOD_S, description="seconds")
]
FiniteFloat = Annotated[float, Meta(ge=-MAX_FLOAT, le=MAX_FLOAT)]


def storable(text: str) -> str:
    """``text`` as Postgres ``text`` can hold it: NUL and lone surrogates written as escapes
    (``\\x00``, ``\\ud800``), everything else unchanged. For text that quotes what a producer
    sent (a rejection's detail, a subject), which the bounds above have not vetted."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        text = text.encode("utf-8", "backslashreplace").decode()
    return text
