"""Every Cypher statement Tessera runs passes Neo4j's own parser and semantic analysis
(npm @neo4j-cypher/language-support, lintCypherQuery)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import subprocess
from pathlib import Path

import services
from services.common.graph import dialect
from services.common.graph.statements import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
LINTER = ROOT / "tools" / "cypher-lint" / "lint.mjs"


def _import_all_stores() -> None:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        if module.name.endswith((".store", ".keystore")) or ".store" in module.name:
            importlib.import_module(module.name)


def lint(statements: list[dict[str, str]]) -> list[dict]:
    node = shutil.which("node")
    assert node, "node is required for the Cypher linter (installed with the machine's Node.js)"
    assert (LINTER.parent / "node_modules" / "@neo4j-cypher").exists(), "run `make setup` to install the linter"
    out = subprocess.run([node, str(LINTER)], input=json.dumps(statements), capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_linter_catches_errors():
    problems = lint([{"name": "bad", "query": "MATCH (n) RETRUN n"},
                     {"name": "not_neo4j", "query": "MATCH (n) WHERE n.name =~ $p RETURN n"},
                     {"name": "ok", "query": "MATCH (n:Person {id: $id}) RETURN n.id AS id"}])
    assert {p["name"] for p in problems} == {"bad"}


def test_every_registered_statement_passes_the_neo4j_linter():
    _import_all_stores()
    from services.identity import store as identity_store
    from services.profile import store as profile_store

    assert len(REGISTRY) >= 20, "store modules were not discovered"
    statements = [{"name": s.name, "query": s.text} for s in REGISTRY.values()]
    from services.common import keystore
    from services.consent import store as consent_store

    for schema in (identity_store.SCHEMA, profile_store.SCHEMA, consent_store.SCHEMA, keystore.SCHEMA):
        statements += [{"name": f"schema:{t}", "query": t} for t in dialect.neo4j_schema_statements(schema)]
        statements += [{"name": f"falkordb-index:{t}", "query": t} for t in dialect.falkordb_index_statements(schema)]
    problems = lint(statements)
    assert problems == []


def test_statements_avoid_constructs_outside_the_portable_subset():
    _import_all_stores()
    forbidden = ["elementId(", "datetime(", "EXISTS {", "COUNT {", "=~", "shortestPath", "IN TRANSACTIONS",
                 "algo.", "gds.", "apoc."]
    offenders = [(s.name, f) for s in REGISTRY.values() for f in forbidden if f in s.text]
    assert offenders == []


def test_statement_names_are_unique():
    import pytest

    from services.common.graph.statements import cypher

    cypher("test.unique_name", "RETURN 1 AS x")
    assert cypher("test.unique_name", "RETURN 1 AS x") == REGISTRY["test.unique_name"]
    with pytest.raises(ValueError, match="duplicate"):
        cypher("test.unique_name", "RETURN 2 AS x")
