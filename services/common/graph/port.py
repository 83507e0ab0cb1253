"""The graph port every store talks to, and the errors it raises.

Stores hand over a registered `Statement` and plain parameters and get rows back as dicts.
The port owns connections, retries transient failures, and turns store errors into domain
errors (`Unavailable` for an unreachable store, `AlreadyExists` for a constraint violation).
Every write is a single atomic statement written to be idempotent, so a retry is always safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from services.common.errors import TesseraError, Unavailable
from services.common.graph.statements import Statement

T = TypeVar("T")
log = structlog.get_logger("tessera.graph")

Row = dict[str, Any]


@dataclass(frozen=True)
class Schema:
    """Indexes and uniqueness constraints a service needs, as data; the dialect renders them."""

    unique: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (label, property)
    indexes: Sequence[tuple[str, str]] = field(default_factory=tuple)


class GraphQueryError(TesseraError):
    """The store rejected a statement: a defect in our Cypher, never the caller's fault."""

    reason = "GRAPH_QUERY_FAILED"


class TransientGraphError(Exception):
    """Raised by adapters for failures worth retrying (connection lost, leader switch)."""


class GraphClient(Protocol):
    dialect: str

    def run(self, statement: Statement, params: dict[str, Any] | None = None) -> list[Row]: ...

    def value(self, statement: Statement) -> Any:
        """The one value of a parameterless read that returns at most one row of one column
        (None without a row). For reads made before every request, where the row machinery of
        `run` is most of the cost."""
        ...

    async def value_async(self, statement: Statement) -> Any:
        """`value`, awaited on the caller's event loop: for the read an asyncio server makes
        before every check, which would otherwise cost two thread switches."""
        ...

    async def close_async(self) -> None:
        """Closes what `value_async` opened, on the loop it ran on (before that loop ends)."""
        ...

    def ensure_schema(self, schema: Schema) -> None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def with_retries(call: Callable[[], T], *, attempts: int, statement: str, base_delay: float = 0.05) -> T:
    """Runs `call`, retrying transient errors with exponential backoff, then raises Unavailable."""
    for attempt in range(1, attempts + 2):
        try:
            return call()
        except TransientGraphError as exc:
            time.sleep(_backoff(exc, attempt, attempts, statement, base_delay))
    raise AssertionError("unreachable")


async def with_retries_async(call: Callable[[], Awaitable[T]], *, attempts: int, statement: str,
                             base_delay: float = 0.05) -> T:
    """`with_retries` for coroutines: the backoff sleeps without holding the event loop."""
    for attempt in range(1, attempts + 2):
        try:
            return await call()
        except TransientGraphError as exc:
            await asyncio.sleep(_backoff(exc, attempt, attempts, statement, base_delay))
    raise AssertionError("unreachable")


def _backoff(exc: TransientGraphError, attempt: int, attempts: int, statement: str, base_delay: float) -> float:
    """The pause before the next attempt, or Unavailable when this was the last one."""
    if attempt > attempts:
        raise Unavailable("the graph store is unavailable; retry later", reason="GRAPH_UNAVAILABLE") from exc
    log.warning("graph_retry", statement=statement, attempt=attempt, max_attempts=attempts + 1,
                error_type=type(exc.__cause__ or exc).__name__)
    return base_delay * 2 ** (attempt - 1)


class SchemaGate:
    """Sets up a service's schema once the store answers. A service whose store is down at start
    still starts and reports NOT_SERVING; this readiness check creates the schema as soon as it can."""

    def __init__(self, graph: GraphClient, *schemas: Schema):
        self._graph = graph
        self._schemas = schemas
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the schema is set up: until then a get-or-create lacks the unique constraint
        that keeps concurrent callers from both creating (FalkorDB lets them)."""
        return self._ready

    def check(self) -> None:
        if not self._ready:
            for schema in self._schemas:
                self._graph.ensure_schema(schema)
            self._ready = True
        self._graph.ping()
