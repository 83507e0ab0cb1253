"""The Neo4j adapter's retry and error mapping, driven with the driver's own exception types.

No Neo4j server can run on this machine; a stand-in driver object raises the exceptions the
real driver raises. Its Cypher is checked by the Neo4j linter (test_cypher_lint.py), and
docs/neo4j.md explains how to run the whole suite against a real Neo4j.
"""

from __future__ import annotations

from typing import Any

import pytest
from neo4j import exceptions as nex

from services.common.errors import Aborted, Unavailable
from services.common.graph.neo4j_adapter import CONFLICT_ATTEMPTS, Neo4jGraph
from services.common.graph.port import GraphQueryError, Schema
from services.common.graph.statements import Statement

STMT = Statement("test.neo4j", "MATCH (n:Person {id: $id}) RETURN n.id AS id")


class _Record:
    def __init__(self, data: dict[str, Any]):
        self._data = data

    def data(self) -> dict[str, Any]:
        return self._data


class ScriptedDriver:
    """Raises the scripted exceptions in order, then answers; records every statement run."""

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.statements: list[tuple[str, dict, str, str]] = []

    def session(self, database: str, default_access_mode: str) -> ScriptedDriver:
        self._session = (database, default_access_mode)
        return self

    def __enter__(self) -> ScriptedDriver:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, text: str, params: dict) -> list[_Record]:
        self.statements.append((text, params, *self._session))
        if self.failures:
            raise self.failures.pop(0)
        return [_Record({"id": params.get("id")})]

    def verify_connectivity(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def close(self) -> None:
        pass


def test_transient_errors_are_retried_then_succeed():
    driver = ScriptedDriver(nex.ServiceUnavailable("down"), nex.SessionExpired("leader moved"))
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver, max_retries=3)
    assert graph.run(STMT, {"id": "p1"}) == [{"id": "p1"}]
    assert len(driver.statements) == 3
    assert {s[2] for s in driver.statements} == {"tessera"}


def test_persistent_outage_maps_to_unavailable():
    driver = ScriptedDriver(*[nex.ServiceUnavailable("down")] * 5)
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver, max_retries=2)
    with pytest.raises(Unavailable):
        graph.run(STMT, {"id": "p1"})
    assert len(driver.statements) == 3


def test_constraint_violation_of_a_read_maps_to_aborted_without_retry():
    driver = ScriptedDriver(nex.ConstraintError("exists"))
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver)
    with pytest.raises(Aborted):
        graph.run(STMT, {"id": "p1"})
    assert len(driver.statements) == 1


WRITE = Statement("test.neo4j_write", "OPTIONAL MATCH (n:Person {id: $id}) RETURN n.id AS id", write=True)


def test_write_that_lost_a_create_race_runs_again():
    driver = ScriptedDriver(nex.ConstraintError("exists"))
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver)
    assert graph.run(WRITE, {"id": "p1"}) == [{"id": "p1"}]
    assert len(driver.statements) == 2


def test_write_that_keeps_conflicting_maps_to_aborted():
    driver = ScriptedDriver(*[nex.ConstraintError("exists")] * 5)
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver)
    with pytest.raises(Aborted):
        graph.run(WRITE, {"id": "p1"})
    assert len(driver.statements) == CONFLICT_ATTEMPTS


def test_syntax_error_is_a_query_error_without_retry():
    driver = ScriptedDriver(nex.CypherSyntaxError("bad"))
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver)
    with pytest.raises(GraphQueryError):
        graph.run(STMT, {"id": "p1"})
    assert len(driver.statements) == 1


def test_reads_and_writes_use_the_right_access_mode():
    import neo4j

    driver = ScriptedDriver()
    graph = Neo4jGraph("neo4j://db:7687", "tessera", driver=driver)
    graph.run(STMT, {"id": "r"})
    graph.run(Statement("test.neo4j_write", "MERGE (n:Person {id: $id}) RETURN n.id AS id", write=True), {"id": "w"})
    assert [s[3] for s in driver.statements] == [neo4j.READ_ACCESS, neo4j.WRITE_ACCESS]


def test_schema_uses_neo4j_constraint_syntax():
    driver = ScriptedDriver()
    Neo4jGraph("neo4j://db:7687", "tessera", driver=driver).ensure_schema(
        Schema(unique=[("Person", "id")], indexes=[("Account", "source")]))
    texts = [s[0] for s in driver.statements]
    assert texts == [
        "CREATE CONSTRAINT person_id_unique IF NOT EXISTS FOR (n:Person) REQUIRE n.id IS UNIQUE",
        "CREATE INDEX account_source IF NOT EXISTS FOR (n:Account) ON (n.source)",
    ]


def test_value_is_the_first_rows_only_value():
    import neo4j

    driver = ScriptedDriver()
    assert Neo4jGraph("bolt://x", "neo4j", driver=driver).value(STMT) is None  # no id parameter: None
    assert driver.statements[0][3] == neo4j.READ_ACCESS


def test_value_async_reads_as_value_does():
    import asyncio

    driver = ScriptedDriver()
    graph = Neo4jGraph("bolt://x", "neo4j", driver=driver)
    assert asyncio.run(graph.value_async(STMT)) is None
    assert len(driver.statements) == 1
