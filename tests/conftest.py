"""Shared fixtures: a real FalkorDB process and real gRPC servers on loopback ports.

A dependency that cannot start fails the test run loudly; nothing here skips.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.config import Settings
from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.graph.factory import connect
from services.common.graph.port import GraphClient
from services.common.logs import configure_logging
from services.common.runtime import Runtime, build_runtime
from services.common.server import RunningServer

_graph_names = itertools.count()


@pytest.fixture(scope="session")
def graph_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The graph store under test: an embedded FalkorDB, or TESSERA_TEST_GRAPH_URI (docs/neo4j.md)."""
    external = os.environ.get("TESSERA_TEST_GRAPH_URI")
    if external:
        yield external
        return
    store = EmbeddedFalkorDB(tmp_path_factory.mktemp("falkordb"), free_port()).start()
    yield store.uri
    store.stop()


@pytest.fixture
def log_buffer() -> io.StringIO:
    """Every log line written by in-process services during the test."""
    buffer = io.StringIO()
    configure_logging("test", "info", "json", stream=buffer)
    return buffer


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans of this test, from the process's SDK tracer provider (set here if none is)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another tracer provider is installed"
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


@pytest.fixture
def graph_name(graph_uri: str) -> str:
    if graph_uri.startswith(("neo4j", "bolt")):
        return os.environ.get("TESSERA_TEST_GRAPH_DATABASE", "neo4j")
    return f"test_{next(_graph_names)}"


def _graph_auth() -> dict[str, str]:
    return {k: os.environ[f"TESSERA_GRAPH_{k.upper()}"] for k in ("user", "password")
            if f"TESSERA_GRAPH_{k.upper()}" in os.environ}


def make_settings(home: Path, graph_uri: str, graph_name: str, **sections: dict) -> Settings:
    base = Settings().replace(home=home, graph={"uri": graph_uri, "database": graph_name, "max_retries": 1,
                                                "timeout_seconds": 3.0, **_graph_auth()},
                              server={"port": free_port(), "grace_seconds": 0.5})
    return base.replace(**sections) if sections else base


@pytest.fixture
def graph(graph_uri: str, graph_name: str) -> Iterator[GraphClient]:
    from services.common.config import GraphSettings

    auth = _graph_auth()
    client = connect(GraphSettings(uri=graph_uri, database=graph_name, **auth), auth.get("password", ""))
    yield client
    client.close()


class Stack:
    """Starts services in-process against one graph, wiring each to the others' ports."""

    def __init__(self, home: Path, graph_uri: str, graph_name: str, *,
                 server: dict[str, dict] | None = None, **extra: dict):
        """`server` holds per-service server settings; `extra` other sections for every service."""
        self.home, self.graph_uri, self.graph_name = home, graph_uri, graph_name
        self.server = server or {}
        self.extra = extra
        self.client_host = "127.0.0.1"
        self.ports = {name: free_port() for name in ("identity", "consent", "profile")}
        self.servers: dict[str, RunningServer] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.channels: list[grpc.Channel] = []

    def settings(self, service: str) -> Settings:
        return make_settings(
            self.home, self.graph_uri, self.graph_name,
            server={"port": self.ports[service], "grace_seconds": 0.5, **self.server.get(service, {})},
            clients={f"{name}_addr": f"{self.client_host}:{port}" for name, port in self.ports.items()},
            **self.extra,
        )

    def start(self, service: str) -> RunningServer:
        from services.common.cli import service_builder

        settings = self.settings(service)
        runtime = build_runtime(service, settings, configure_process=False)
        self.runtimes[service] = runtime
        server = RunningServer(service_builder(service)(runtime), settings).start()
        self.servers[service] = server
        return server

    def channel(self, service: str) -> grpc.Channel:
        ch = grpc.insecure_channel(f"127.0.0.1:{self.ports[service]}")
        grpc.channel_ready_future(ch).result(timeout=10)
        self.channels.append(ch)
        return ch

    def stop(self) -> None:
        for ch in self.channels:
            ch.close()
        for server in self.servers.values():
            server.stop(0)


@pytest.fixture
def stack_factory(tmp_path: Path, graph_uri: str, graph_name: str, log_buffer: io.StringIO
                  ) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(*services: str) -> Stack:
        stack = Stack(tmp_path / "home", graph_uri, graph_name)
        for service in services:
            stack.start(service)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
