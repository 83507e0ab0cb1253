"""Shared bench plumbing: an embedded FalkorDB and in-process services on loopback ports, and
latency statistics."""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from services.common.cli import service_builder
from services.common.config import Settings
from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.runtime import build_runtime
from services.common.server import RunningServer


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("splink").setLevel(logging.ERROR)


@dataclass
class LocalStack:
    channels: dict[str, grpc.Channel]
    graph_uri: str
    home: Path


@contextmanager
def local_stack(*services: str, workers: int = 16) -> Iterator[LocalStack]:
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedFalkorDB(Path(tmp) / "graph", free_port()).start()
        ports = {name: free_port() for name in ("identity", "consent", "profile")}
        servers, channels = [], {}
        try:
            for service in services:
                settings = Settings().replace(
                    home=Path(tmp) / "home", graph={"uri": store.uri, "database": "bench"},
                    server={"port": ports[service], "max_workers": workers},
                    clients={f"{n}_addr": f"127.0.0.1:{p}" for n, p in ports.items()})
                runtime = build_runtime(service, settings, configure_process=False)
                servers.append(RunningServer(service_builder(service)(runtime), settings).start())
                channels[service] = grpc.insecure_channel(f"127.0.0.1:{ports[service]}")
                grpc.channel_ready_future(channels[service]).result(timeout=10)
            yield LocalStack(channels, store.uri, Path(tmp) / "home")
        finally:
            for ch in channels.values():
                ch.close()
            for server in servers:
                server.stop(0)
            store.stop()


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3), "mean_ms": round(statistics.fmean(ordered), 3),
            "samples": len(ordered)}
