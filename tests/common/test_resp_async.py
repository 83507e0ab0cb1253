"""The asyncio RESP connection behind `value_async`: replies split across reads, silence, a
dropped connection and authentication, against loopback servers and a real FalkorDB."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions as rex

from services.common.config import GraphSettings
from services.common.errors import Unavailable
from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.graph import resp_async
from services.common.graph.factory import connect
from services.common.graph.statements import Statement

REPLY = b"*2\r\n$5\r\nhello\r\n:42\r\n"


async def serving(handle) -> tuple[asyncio.AbstractServer, int]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def open_connection(port: int, timeout: float = 5.0) -> resp_async.RespConnection:
    return await resp_async.RespConnection.open("127.0.0.1", port, username=None, password=None,
                                                connect_timeout=timeout, timeout=timeout)


async def a_call_that_fails(port: int, error: type[Exception], timeout: float = 5.0) -> resp_async.RespConnection:
    """Opens a connection, expects its first call to fail with `error` and leave it closed."""
    connection = await open_connection(port, timeout)
    with pytest.raises(error):
        await connection.call(resp_async.encode("PING"), timeout)
    assert connection.closed
    return connection


def test_commands_are_encoded_as_arrays_of_bulk_strings_by_their_bytes():
    assert resp_async.encode("GET", "Müller \"q\"\r\n") == b'*2\r\n$3\r\nGET\r\n$13\r\nM\xc3\xbcller "q"\r\n\r\n'


def test_a_reply_that_arrives_a_byte_at_a_time_is_read_whole():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            for i in range(len(REPLY)):
                writer.write(REPLY[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async def scenario() -> None:
        server, port = await serving(handle)
        async with server:
            connection = await open_connection(port)
            assert await connection.call(resp_async.encode("PING"), 5) == ["hello", 42]
            assert await connection.call(resp_async.encode("PING"), 5) == ["hello", 42]
            connection.close()

    asyncio.run(scenario())


def test_silence_times_out_and_closes_the_connection():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        await reader.read(1024)  # until the client gives up

    async def scenario() -> None:
        server, port = await serving(handle)
        async with server:
            connection = await a_call_that_fails(port, rex.TimeoutError, timeout=0.2)
            # closed: a late reply must not answer the next call
            with pytest.raises(rex.ConnectionError):
                await connection.call(resp_async.encode("PING"), 0.2)

    asyncio.run(scenario())


def test_a_connection_the_server_drops_fails_the_waiting_call():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)

    async def scenario() -> None:
        server, port = await serving(handle)
        async with server:
            await a_call_that_fails(port, rex.ConnectionError)

    asyncio.run(scenario())


def test_value_async_authenticates_and_a_wrong_password_is_unavailable(tmp_path):
    store = EmbeddedFalkorDB(tmp_path / "db", free_port()).start()
    password = "sé'cret \"q\" \\"
    try:
        admin = connect(GraphSettings(uri=store.uri, database="auth"))
        admin.run(Statement("test.seed", "CREATE (:Echo {id: 'v', value: 'ok'})", write=True))
        admin._connected()[0].connection.config_set("requirepass", password)
        admin.close()
        read = Statement("test.value_of", "MATCH (n:Echo {id: 'v'}) RETURN n.value AS value")

        async def value_with(secret: str):
            graph = connect(GraphSettings(uri=store.uri, database="auth", max_retries=0), password=secret)
            try:
                return await graph.value_async(read)
            finally:
                await graph.close_async()

        assert asyncio.run(value_with(password)) == "ok"
        with pytest.raises(Unavailable):
            asyncio.run(value_with("wrong"))
    finally:
        store.stop()


def test_a_server_that_is_loading_is_unavailable_not_a_broken_statement():
    """Error replies that mean "not now" are retried and then reported unavailable, as the
    synchronous client reports them; the connection starts afresh."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")

    async def scenario() -> None:
        server, port = await serving(handle)
        async with server:
            await a_call_that_fails(port, rex.BusyLoadingError)
            graph = connect(GraphSettings(uri=f"falkordb://127.0.0.1:{port}", database="x", max_retries=1))
            with pytest.raises(Unavailable):
                await graph.value_async(Statement("test.read", "RETURN 1 AS one"))
            await graph.close_async()

    asyncio.run(scenario())


def test_a_reply_nobody_asked_for_closes_the_connection():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            writer.write(REPLY + REPLY)  # one reply too many

    async def scenario() -> None:
        server, port = await serving(handle)
        async with server:
            await a_call_that_fails(port, rex.InvalidResponse)

    asyncio.run(scenario())


def test_the_connections_of_closed_loops_are_forgotten(graph):
    graph.run(Statement("test.seed", "CREATE (:Echo {id: 'v', value: 'ok'})", write=True))
    read = Statement("test.value_of", "MATCH (n:Echo {id: 'v'}) RETURN n.value AS value")

    async def read_on_a_new_loop():
        try:
            return await graph.value_async(read), len(graph._on_loops)
        finally:
            await graph.close_async()

    for _ in range(3):  # each asyncio.run is a loop that ends
        assert asyncio.run(read_on_a_new_loop()) == ("ok", 1)
