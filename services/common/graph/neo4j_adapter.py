"""Neo4j 5 adapter over the official driver. Each statement runs as one auto-commit transaction
so the port, not the driver, owns retries — the same behaviour as with FalkorDB."""

from __future__ import annotations

import asyncio
from typing import Any

import neo4j
from neo4j import exceptions as nex

from services.common.errors import Aborted
from services.common.graph import dialect
from services.common.graph.port import GraphQueryError, Row, Schema, TransientGraphError, with_retries
from services.common.graph.statements import Statement

CONFLICT_ATTEMPTS = 3
_TRANSIENT = (nex.ServiceUnavailable, nex.SessionExpired, nex.TransientError, nex.DriverError, OSError)


class Neo4jGraph:
    dialect = dialect.NEO4J

    def __init__(self, uri: str, database: str, *, user: str = "neo4j", password: str = "",
                 timeout_seconds: float = 10.0, max_retries: int = 3, pool_size: int = 32,
                 driver: Any = None):
        self._driver = driver or neo4j.GraphDatabase.driver(
            uri,
            auth=(user or "neo4j", password),
            connection_timeout=timeout_seconds,
            max_connection_pool_size=pool_size,
        )
        self._database = database
        self._retries = max_retries

    def run(self, statement: Statement, params: dict[str, Any] | None = None) -> list[Row]:
        mode = neo4j.WRITE_ACCESS if statement.write else neo4j.READ_ACCESS
        return self._call(statement.name, statement.text, params or {}, mode)

    def value(self, statement: Statement) -> Any:
        rows = self.run(statement)
        return next(iter(rows[0].values())) if rows else None

    async def value_async(self, statement: Statement) -> Any:
        """On a thread: the synchronous driver's sessions are not the asyncio driver's, and one
        head read per check does not justify a second connection pool to Neo4j."""
        return await asyncio.to_thread(self.value, statement)

    async def close_async(self) -> None:
        """`value_async` opens nothing of its own."""

    def _call(self, name: str, text: str, params: dict[str, Any], mode: str) -> list[Row]:
        def once() -> list[Row]:
            with self._driver.session(database=self._database, default_access_mode=mode) as session:
                return [record.data() for record in session.run(text, params)]

        def conflict_retried() -> list[Row]:
            """Every write is one idempotent statement, so one that lost a race to create the same
            unique node (a get-or-create written as OPTIONAL MATCH … CREATE) finds the node when
            it runs again."""
            for _ in range(CONFLICT_ATTEMPTS - 1):
                try:
                    return once()
                except nex.ConstraintError:
                    if mode != neo4j.WRITE_ACCESS:
                        raise
            return once()

        def call() -> list[Row]:
            try:
                return conflict_retried()
            except nex.ConstraintError as exc:
                raise Aborted("a concurrent write conflicted; retry", reason="GRAPH_CONFLICT") from exc
            except nex.ClientError as exc:
                raise GraphQueryError(f"graph statement {name} failed") from exc
            except _TRANSIENT as exc:
                raise TransientGraphError(str(exc)) from exc

        return with_retries(call, attempts=self._retries, statement=name)

    def ensure_schema(self, schema: Schema) -> None:
        for i, text in enumerate(dialect.neo4j_schema_statements(schema)):
            self._call(f"schema_{i}", text, {}, neo4j.WRITE_ACCESS)

    def ping(self) -> None:
        def call() -> None:
            try:
                self._driver.verify_connectivity()
            except _TRANSIENT as exc:
                raise TransientGraphError(str(exc)) from exc

        with_retries(call, attempts=0, statement="ping")

    def close(self) -> None:
        self._driver.close()
