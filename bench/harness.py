"""Shared bench plumbing: an embedded FalkorDB and in-process services on loopback ports, and
latency statistics."""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.falkordb_server import EmbeddedFalkorDB, free_port


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("splink").setLevel(logging.ERROR)


@dataclass
class LocalStack:
    channels: dict[str, grpc.Channel]
    graph_uri: str
    home: Path
    env: dict[str, str]  # the services' environment, for CLI commands run against the stack
    pids: dict[str, int]  # service (and "falkordb") → process id


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextmanager
def local_stack(*services: str, workers: int = 16) -> Iterator[LocalStack]:
    """Each service in its own process (`tessera serve`), as deployed, on an embedded FalkorDB."""
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedFalkorDB(Path(tmp) / "graph", free_port()).start()
        ports = {name: free_port() for name in ("identity", "consent", "profile")}
        env = {**os.environ, "TESSERA_HOME": str(Path(tmp) / "home"), "TESSERA_GRAPH_URI": store.uri,
               "TESSERA_GRAPH_DATABASE": "bench", "TESSERA_LOG_LEVEL": "warning",
               "TESSERA_SERVER_MAX_WORKERS": str(workers),
               **{f"TESSERA_CLIENTS_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()}}
        processes, channels = [], {}
        try:
            for service in services:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "services.common.cli", "serve", service],
                    env={**env, "TESSERA_SERVER_PORT": str(ports[service])}, stderr=subprocess.DEVNULL))
                channels[service] = grpc.insecure_channel(f"127.0.0.1:{ports[service]}")
                _wait_serving(channels[service], FULL_NAMES[service])
            pids = {name: proc.pid for name, proc in zip(services, processes, strict=True)}
            if store.process is not None:
                pids["falkordb"] = store.process.pid
            yield LocalStack(channels, store.uri, Path(tmp) / "home", env, pids)
        finally:
            for ch in channels.values():
                ch.close()
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)
            store.stop()


FULL_NAMES = {"identity": "tessera.identity.v1.IdentityService", "consent": "tessera.consent.v1.ConsentService",
              "profile": "tessera.profile.v1.ProfileService"}


def _wait_serving(channel: grpc.Channel, name: str, timeout: float = 60.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=1).status == \
                    health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not become SERVING")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3), "mean_ms": round(statistics.fmean(ordered), 3),
            "samples": len(ordered)}
