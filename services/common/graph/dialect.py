"""The one place where Neo4j and FalkorDB Cypher differ: schema statements."""

from __future__ import annotations

from services.common.graph.port import Schema

NEO4J = "neo4j"
FALKORDB = "falkordb"


def neo4j_schema_statements(schema: Schema) -> list[str]:
    out = []
    for label, prop in schema.unique:
        out.append(
            f"CREATE CONSTRAINT {label.lower()}_{prop}_unique IF NOT EXISTS "
            f"FOR (n:{label}) REQUIRE n.{prop} IS UNIQUE"
        )
    for label, prop in schema.indexes:
        out.append(f"CREATE INDEX {label.lower()}_{prop} IF NOT EXISTS FOR (n:{label}) ON (n.{prop})")
    return out


def falkordb_index_statements(schema: Schema) -> list[str]:
    """FalkorDB needs an exact-match index under each unique constraint; it has no IF NOT EXISTS,
    so the adapter ignores 'already indexed' errors."""
    pairs = list(dict.fromkeys([*schema.unique, *schema.indexes]))
    return [f"CREATE INDEX FOR (n:{label}) ON (n.{prop})" for label, prop in pairs]


def falkordb_constraint_commands(graph: str, schema: Schema) -> list[tuple[str, ...]]:
    return [
        ("GRAPH.CONSTRAINT", "CREATE", graph, "UNIQUE", "NODE", label, "PROPERTIES", "1", prop)
        for label, prop in schema.unique
    ]
