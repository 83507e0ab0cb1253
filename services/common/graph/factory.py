"""Chooses the adapter from the graph URI scheme."""

from __future__ import annotations

from urllib.parse import urlparse

from services.common.config import GraphSettings
from services.common.graph.port import GraphClient


def connect(settings: GraphSettings, password: str = "") -> GraphClient:
    scheme = urlparse(settings.uri).scheme
    common = {"timeout_seconds": settings.timeout_seconds, "max_retries": settings.max_retries,
              "pool_size": settings.pool_size}
    if scheme in {"falkordb", "redis"}:
        from services.common.graph.falkordb_adapter import FalkorDBGraph

        return FalkorDBGraph(settings.uri, settings.database, user=settings.user, password=password, **common)
    from services.common.graph.neo4j_adapter import Neo4jGraph

    return Neo4jGraph(settings.uri, settings.database, user=settings.user, password=password, **common)
