"""FalkorDB adapter over its native RESP client (never its Bolt endpoint; see docs/architecture.md)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis.exceptions as rex
import structlog
from falkordb import FalkorDB
from falkordb.query_result import QueryResult

from services.common.errors import Aborted, InvalidArgument
from services.common.graph import dialect, resp_async
from services.common.graph.port import (
    GraphQueryError,
    Row,
    Schema,
    TransientGraphError,
    with_retries,
    with_retries_async,
)
from services.common.graph.statements import Statement

log = structlog.get_logger("tessera.graph")

_TRANSIENT = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, ConnectionError, OSError)


_SCALARS = frozenset({str, int, float, bool, type(None)})

# FalkorDB's compact reply (`--compact`) gives every value as [type, raw]. The types below are
# decoded here; nodes, edges, paths, points and temporal values go to the client's own parser.
_NULL, _STRING, _INTEGER, _BOOLEAN, _DOUBLE, _ARRAY, _MAP = 1, 2, 3, 4, 5, 6, 10


class _NotPlain(Exception):
    """A compact value `_decode` leaves to the client's parser."""


def _decode(cell: list[Any]) -> Any:
    kind, raw = cell
    if kind in (_STRING, _INTEGER):
        return raw
    if kind == _NULL:
        return None
    if kind == _ARRAY:
        return [_decode(c) for c in raw]
    if kind == _BOOLEAN:
        return raw == "true"
    if kind == _DOUBLE:
        return float(raw)
    if kind == _MAP:
        return {raw[i]: _decode(raw[i + 1]) for i in range(0, len(raw), 2)}
    raise _NotPlain


def _plain(value: Any) -> Any:
    if isinstance(value, OrderedDict | dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_NEEDS_RUN = object()  # a value `_single_value` leaves to `run`


def _reads_only(statement: Statement) -> None:
    if statement.write:
        raise ValueError(f"{statement.name} is a write; value() serves reads")


def _unwritten_graph(statement: Statement, exc: rex.ResponseError) -> None:
    """A graph never written does not exist yet (the reply None: `run` knows how to read it);
    any other error is a defect in the statement."""
    if "empty key" not in str(exc):
        raise GraphQueryError(f"graph statement {statement.name} failed") from exc


def _single_value(statement: Statement, reply: list[Any] | None) -> Any:
    """The one value of a compact reply, None without a row, `_NEEDS_RUN` for what only the
    client's parser reads (nodes, points, temporal values) or a graph not yet written."""
    if reply is None:
        return _NEEDS_RUN
    rows = reply[1]
    if not rows:
        return None
    if len(rows) > 1 or len(rows[0]) != 1:
        raise GraphQueryError(f"graph statement {statement.name} returned more than one value")
    try:
        return _decode(rows[0][0])
    except _NotPlain:
        return _NEEDS_RUN


@functools.lru_cache(maxsize=64)
def _read_command(database: str, text: str) -> bytes:
    """`value_async`'s command, encoded once per statement: it is sent before every check."""
    return resp_async.encode("GRAPH.RO_QUERY", database, text, "--compact")


@dataclass
class _LoopConnection:
    lock: asyncio.Lock
    connection: resp_async.RespConnection | None = None


class FalkorDBGraph:
    dialect = dialect.FALKORDB

    def __init__(self, uri: str, database: str, *, password: str = "", user: str = "",
                 timeout_seconds: float = 10.0, max_retries: int = 3, pool_size: int = 32):
        parsed = urlparse(uri)
        self._options: dict[str, Any] = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 6379,
            "username": unquote(parsed.username) if parsed.username else (user or None),
            "password": unquote(parsed.password) if parsed.password else (password or None),
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": min(timeout_seconds, 3.0),
            "max_connections": pool_size,
        }
        self._name = database
        self._connect_lock = threading.Lock()
        self._db: Any = None
        self._graph: Any = None
        self._retries = max_retries
        # `value` reads go over one connection of their own: no pool checkout per read.
        self._value_lock = threading.Lock()
        self._value_connection: Any = None
        # `value_async` reads: one asyncio connection per event loop (connections belong to the
        # loop that made them); entries of closed loops are dropped when a new loop first reads.
        self._on_loops: dict[asyncio.AbstractEventLoop, _LoopConnection] = {}

    async def _open_async(self) -> resp_async.RespConnection:
        o = self._options
        return await resp_async.RespConnection.open(
            o["host"], o["port"], username=o["username"], password=o["password"],
            connect_timeout=o["socket_connect_timeout"], timeout=o["socket_timeout"])

    def _connected(self) -> tuple[Any, Any]:
        """The client and the graph, made on first use: the client asks the server what it is
        (sentinel, cluster) as it is made, and a service must start, and report itself not
        ready, while its store is still down."""
        if self._graph is None:
            with self._connect_lock:
                if self._graph is None:
                    try:
                        db = FalkorDB(**self._options)
                    except _TRANSIENT as exc:
                        raise TransientGraphError(str(exc)) from exc
                    self._db, self._graph = db, db.select_graph(self._name)
        return self._db, self._graph

    def run(self, statement: Statement, params: dict[str, Any] | None = None) -> list[Row]:
        def call() -> list[Row]:
            try:
                reply = self._query(statement.write, statement.text, params or {})
            except _TRANSIENT as exc:
                raise TransientGraphError(str(exc)) from exc
            except rex.ResponseError as exc:
                if "unique constraint violation" in str(exc):
                    raise Aborted("a concurrent write conflicted; retry", reason="GRAPH_CONFLICT") from exc
                raise GraphQueryError(f"graph statement {statement.name} failed") from exc
            return self._rows(reply)

        return with_retries(call, attempts=self._retries, statement=statement.name)

    def _query(self, write: bool, text: str, params: dict[str, Any]) -> list[Any]:
        """The raw compact reply. The command is the one the client's own `query` sends, with its
        parameter header (the client's quoting), but the reply is decoded by `_rows`: the client's
        parser added about a quarter to the round trip on reads of a few thousand rows."""
        graph = self._connected()[1]
        command = "GRAPH.QUERY" if write else "GRAPH.RO_QUERY"
        query = graph._build_params_header(params) + text if params else text
        if "\x00" in query:
            # FalkorDB fails a statement whose text parameter holds a NUL character. It comes from a
            # caller (everything else is generated or encrypted and encoded): bad input, not a fault.
            raise InvalidArgument.single("request", "text must not hold a NUL character (U+0000)")
        try:
            reply = graph.execute_command(command, self._name, query, "--compact")
        except rex.ResponseError as exc:
            # A graph that has never been written does not exist yet: a read of it finds nothing.
            if write or "empty key" not in str(exc):
                raise
            reply = graph.execute_command("GRAPH.QUERY", self._name, query, "--compact")
        for part in (reply[0], reply[-1]):  # errors met while running come back inside the reply
            if isinstance(part, rex.ResponseError):
                raise part
        return reply

    def _rows(self, reply: list[Any]) -> list[Row]:
        if len(reply) == 1:  # statistics only: the statement returns nothing
            return []
        names = [h[1] for h in reply[0]]
        try:
            return [{name: _decode(cell) for name, cell in zip(names, row, strict=True)} for row in reply[1]]
        except _NotPlain:
            result = QueryResult(self._connected()[1], reply)
            return [{name: value if value.__class__ in _SCALARS else _plain(value)
                     for name, value in zip(names, row, strict=True)} for row in result.result_set]

    def value(self, statement: Statement) -> Any:
        """One value, read over a connection of its own with no pool checkout: on reads this
        small (the ledger head before every check) the checkout costs as much as the round trip."""
        _reads_only(statement)

        def call() -> Any:
            with self._value_lock:
                try:
                    if self._value_connection is None:
                        db = self._connected()[0]
                        self._value_connection = db.connection.connection_pool.make_connection()
                    connection = self._value_connection
                    connection.send_command("GRAPH.RO_QUERY", self._name, statement.text, "--compact")
                    reply = connection.read_response()
                except rex.ResponseError as exc:
                    reply = _unwritten_graph(statement, exc)
                except BaseException as exc:
                    self._drop_value_connection()  # a reply may be half read
                    if isinstance(exc, _TRANSIENT):
                        raise TransientGraphError(str(exc)) from exc
                    raise
            found = _single_value(statement, reply)
            return self._value_by_run(statement) if found is _NEEDS_RUN else found

        return with_retries(call, attempts=self._retries, statement=statement.name)

    async def value_async(self, statement: Statement) -> Any:
        """`value` over an asyncio connection of the running loop's own, made on first use."""
        _reads_only(statement)

        async def call() -> Any:
            loop = asyncio.get_running_loop()
            mine = self._on_loops.get(loop)
            if mine is None:
                for closed in [other for other in list(self._on_loops) if other.is_closed()]:
                    self._on_loops.pop(closed, None)
                mine = self._on_loops[loop] = _LoopConnection(asyncio.Lock())
            async with mine.lock:
                try:
                    if mine.connection is None or mine.connection.closed:
                        mine.connection = await self._open_async()
                    reply = await mine.connection.call(_read_command(self._name, statement.text),
                                                       self._options["socket_timeout"])
                    if isinstance(reply, rex.ResponseError):
                        raise reply
                except rex.ResponseError as exc:
                    reply = _unwritten_graph(statement, exc)
                except (*_TRANSIENT, rex.InvalidResponse) as exc:  # the connection closed itself: a read retries
                    raise TransientGraphError(str(exc)) from exc
            found = _single_value(statement, reply)
            return await asyncio.to_thread(self._value_by_run, statement) if found is _NEEDS_RUN else found

        return await with_retries_async(call, attempts=self._retries, statement=statement.name)

    def _value_by_run(self, statement: Statement) -> Any:
        found = self.run(statement)
        return next(iter(found[0].values())) if found else None

    def _drop_value_connection(self) -> None:
        if self._value_connection is not None:
            self._value_connection.disconnect()
            self._value_connection = None

    def ensure_schema(self, schema: Schema) -> None:
        def call() -> None:
            try:
                db, graph = self._connected()
                for text in dialect.falkordb_index_statements(schema):
                    try:
                        graph.query(text)
                    except rex.ResponseError as exc:
                        if "already indexed" not in str(exc):
                            raise
                for command in dialect.falkordb_constraint_commands(self._name, schema):
                    try:
                        db.connection.execute_command(*command)
                    except rex.ResponseError as exc:
                        if "already exists" not in str(exc).lower():
                            raise
            except _TRANSIENT as exc:
                raise TransientGraphError(str(exc)) from exc

        with_retries(call, attempts=self._retries, statement="ensure_schema")

    def ping(self) -> None:
        def call() -> None:
            try:
                self._connected()[0].connection.ping()
            except _TRANSIENT as exc:
                raise TransientGraphError(str(exc)) from exc

        with_retries(call, attempts=0, statement="ping")

    async def close_async(self) -> None:
        mine = self._on_loops.get(asyncio.get_running_loop())
        if mine is not None:
            async with mine.lock:  # a later `value_async` connects again
                if mine.connection is not None:
                    mine.connection.close()
                    mine.connection = None
                    await asyncio.sleep(0)  # the transport closes on the loop's next turn

    def close(self) -> None:
        with self._value_lock:
            self._drop_value_connection()
        if self._db is not None:
            self._db.connection.close()
