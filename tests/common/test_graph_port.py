"""The graph port against a real FalkorDB: parameter safety, errors, retries, recovery."""

from __future__ import annotations

import asyncio

import pytest

from services.common.config import GraphSettings
from services.common.errors import Unavailable
from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.graph.factory import connect
from services.common.graph.port import GraphQueryError, Schema
from services.common.graph.statements import Statement

ECHO_WRITE = Statement("test.echo_write", "MERGE (n:Echo {id: $id}) SET n.value = $value RETURN n.value AS value",
                       write=True)
ECHO_READ = Statement("test.echo_read", "MATCH (n:Echo {id: $id}) RETURN n.value AS value, n.id AS id")

TRICKY = [
    "plain",
    "quote ' and \" double",
    "back\\slash \\' escaped-looking \\\\",
    "}) DETACH DELETE n //",
    "' OR 1=1 RETURN n //",
    "unicode: Müller Straße 東京 🚀 \u200b",
    "newline\nand\ttab\r\n",
    "$param {not: 'a map'}",
    "x" * 100_000,
]


@pytest.mark.parametrize("value", TRICKY, ids=range(len(TRICKY)))
def test_string_parameters_round_trip_unchanged(graph, value):
    graph.run(ECHO_WRITE, {"id": value, "value": value})
    rows = graph.run(ECHO_READ, {"id": value})
    assert rows == [{"value": value, "id": value}]


def test_injection_text_does_not_touch_other_nodes(graph):
    graph.run(ECHO_WRITE, {"id": "victim", "value": "kept"})
    graph.run(ECHO_WRITE, {"id": "attacker", "value": "'}) MATCH (m) DETACH DELETE m //"})
    assert graph.run(ECHO_READ, {"id": "victim"}) == [{"value": "kept", "id": "victim"}]


def test_numbers_lists_and_maps_round_trip(graph):
    stmt = Statement("test.echo_values", "RETURN $i AS i, $f AS f, $l AS l, $m AS m, $n AS n")
    values = {"i": 2**53 + 1, "f": 0.123456789012345, "l": ["a", "b'\\"], "m": {"k": "v\"", "z": [1, 2]}, "n": None}
    assert graph.run(stmt, values) == [values]


def test_schema_setup_is_idempotent_and_enforces_uniqueness(graph):
    schema = Schema(unique=[("Echo", "id")], indexes=[("Echo", "value")])
    graph.ensure_schema(schema)
    graph.ensure_schema(schema)
    create = Statement("test.create_echo", "CREATE (n:Echo {id: $id}) RETURN n.id AS id", write=True)
    graph.run(create, {"id": "u1"})
    from services.common.errors import Aborted

    with pytest.raises(Aborted):
        graph.run(create, {"id": "u1"})


def test_a_nul_character_in_a_text_parameter_is_bad_input_and_writes_nothing(graph):
    """FalkorDB fails a statement whose text parameter holds U+0000: the caller's input (everything
    we generate is hex, base64 or validated), so INVALID_ARGUMENT rather than an internal error."""
    from services.common.errors import InvalidArgument

    for value in ("nul\x00inside", ["a", "b\x00"], {"nested": {"deeper": "\x00"}}):
        with pytest.raises(InvalidArgument):
            graph.run(ECHO_WRITE, {"id": "n1", "value": value})
    assert graph.run(ECHO_READ, {"id": "n1"}) == []
    graph.run(ECHO_WRITE, {"id": "n1", "value": "\u0001 and \u001f are kept"})
    assert graph.run(ECHO_READ, {"id": "n1"}) == [{"value": "\u0001 and \u001f are kept", "id": "n1"}]


def test_bad_statement_is_a_query_error_not_a_retry(graph):
    with pytest.raises(GraphQueryError):
        graph.run(Statement("test.bad", "MATCH (n) RETURN nosuchfunction(n) AS x"), {})


def test_stopped_store_is_unavailable_and_recovers(tmp_path):
    store = EmbeddedFalkorDB(tmp_path / "db", free_port()).start()
    client = connect(GraphSettings(uri=store.uri, database="recover", max_retries=1, timeout_seconds=1.0))
    client.run(ECHO_WRITE, {"id": "a", "value": "before"})
    store.stop()
    with pytest.raises(Unavailable):
        client.run(ECHO_READ, {"id": "a"})
    store.start()
    assert client.run(ECHO_READ, {"id": "a"}) == [{"value": "before", "id": "a"}]
    client.close()
    store.stop()


VALUE_OF = Statement("test.value_of", "MATCH (n:Echo {id: 'v'}) RETURN n.value AS value")


def _value_awaited(graph, statement):
    async def read():
        try:
            return await graph.value_async(statement)
        finally:
            await graph.close_async()

    return asyncio.run(read())


@pytest.fixture(params=["value", "value_async"])
def read_value(request):
    """`value` and `value_async` (on an event loop of its own) must read exactly alike."""
    return (lambda graph, statement: graph.value(statement)) if request.param == "value" else _value_awaited


@pytest.mark.parametrize("value", [7, 2**53 + 1, -1, 0.1234567890123, True, False, "quote ' \" back\\slash 東京",
                                   "", ["a", 1]], ids=range(9))
def test_value_reads_one_value_exactly_as_run_does(graph, read_value, value):
    graph.run(ECHO_WRITE, {"id": "v", "value": value})
    assert read_value(graph, VALUE_OF) == value
    assert read_value(graph, VALUE_OF) == graph.run(VALUE_OF)[0]["value"]


def test_value_of_a_map_keeps_its_nested_values(graph, read_value):
    stmt = Statement("test.map_value", "RETURN {k: 'v', n: [1, 2.5, null, true]} AS m")
    assert read_value(graph, stmt) == {"k": "v", "n": [1, 2.5, None, True]}


def test_values_the_adapter_does_not_decode_come_from_the_clients_parser(graph, read_value):
    stmt = Statement("test.point", "RETURN point({latitude: 52.5, longitude: 13.25}) AS p, 'x' AS s")
    assert graph.run(stmt) == [{"p": {"latitude": 52.5, "longitude": 13.25}, "s": "x"}]
    assert read_value(graph, Statement("test.point_value", "RETURN point({latitude: 1.0, longitude: 2.0}) AS p")) == {
        "latitude": 1.0, "longitude": 2.0}


def test_a_write_without_return_gives_no_rows(graph):
    assert graph.run(Statement("test.silent_write", "CREATE (:Echo {id: 'silent'})", write=True)) == []
    assert graph.run(ECHO_READ, {"id": "silent"}) == [{"value": None, "id": "silent"}]


def test_value_without_a_row_or_graph_is_none(graph, read_value):
    assert read_value(graph, VALUE_OF) is None  # nothing was ever written to this graph
    graph.run(ECHO_WRITE, {"id": "other", "value": 1})
    assert read_value(graph, VALUE_OF) is None


def test_value_refuses_writes_and_many_values(graph, read_value):
    with pytest.raises(ValueError, match="is a write"):
        read_value(graph, ECHO_WRITE)
    graph.run(ECHO_WRITE, {"id": "a", "value": 1})
    graph.run(ECHO_WRITE, {"id": "b", "value": 2})
    with pytest.raises(GraphQueryError):
        read_value(graph, Statement("test.values", "MATCH (n:Echo) RETURN n.value AS value"))
    with pytest.raises(GraphQueryError):
        read_value(graph, Statement("test.bad_value", "RETURN nosuchfunction(1) AS x"))
    graph.run(ECHO_WRITE, {"id": "v", "value": "after the errors"})
    assert read_value(graph, VALUE_OF) == "after the errors"  # the connection stayed usable


def test_value_connection_recovers_after_an_outage(tmp_path):
    store = EmbeddedFalkorDB(tmp_path / "db", free_port()).start()
    client = connect(GraphSettings(uri=store.uri, database="recover", max_retries=1, timeout_seconds=1.0))
    client.run(ECHO_WRITE, {"id": "v", "value": "before"})
    assert client.value(VALUE_OF) == "before"
    store.stop()
    with pytest.raises(Unavailable):
        client.value(VALUE_OF)
    store.start()
    assert client.value(VALUE_OF) == "before"
    client.close()
    store.stop()


def test_asyncio_value_connection_recovers_after_an_outage_on_its_loop(tmp_path):
    store = EmbeddedFalkorDB(tmp_path / "db", free_port()).start()
    client = connect(GraphSettings(uri=store.uri, database="recover", max_retries=1, timeout_seconds=1.0))
    client.run(ECHO_WRITE, {"id": "v", "value": "before"})
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(client.value_async(VALUE_OF)) == "before"
        store.stop()
        with pytest.raises(Unavailable):
            loop.run_until_complete(client.value_async(VALUE_OF))
        store.start()
        assert loop.run_until_complete(client.value_async(VALUE_OF)) == "before"
        loop.run_until_complete(client.close_async())
        # a later loop (a restarted server) gets a connection of its own
        assert _value_awaited(client, VALUE_OF) == "before"
    finally:
        loop.close()
        client.close()
        store.stop()
