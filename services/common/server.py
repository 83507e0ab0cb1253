"""gRPC server bootstrap shared by the three services: interceptors, health checking (with a
readiness signal that follows the graph store), reflection, optional mTLS, and graceful shutdown."""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import auth
from services.common.asyncio_server import AsyncioServer
from services.common.config import Settings
from services.common.errors import TesseraError
from services.common.interceptors import ServerInterceptor

log = structlog.get_logger("tessera.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceSpec:
    """What a service contributes to the shared bootstrap."""

    name: str  # "identity"
    full_name: str  # "tessera.identity.v1.IdentityService"
    register: Callable[[grpc.Server], None]
    readiness_check: Callable[[], None]  # raises when a dependency is down
    close: Callable[[], None] = lambda: None
    # Whether the store's schema is set up; until then every RPC is refused with UNAVAILABLE
    # (a service whose store was down at start serves before its schema gate could run).
    schema_ready: Callable[[], bool] = lambda: True
    extra_service_names: list[str] = field(default_factory=list)
    # Serve on grpc's asyncio server: handlers written as coroutines run on its event loop, the
    # others on its thread pool. Synchronous streaming handlers work there too, but each message
    # is one hop to the pool: services with bulk streams (identity's import) stay synchronous.
    asyncio: bool = False
    # Run on the asyncio server's loop once it has stopped serving, before the loop ends: closes
    # what coroutines opened on that loop (the graph's asyncio connection).
    close_on_loop: Callable[[], Awaitable[None]] | None = None


class RunningServer:
    def __init__(self, spec: ServiceSpec, settings: Settings):
        self.spec = spec
        self.settings = settings
        self.health = health.HealthServicer(experimental_non_blocking=True)
        policy = auth.CallerPolicy.load(settings.auth.policy_file, dev_mode=settings.auth.mode == "dev")
        interceptor = ServerInterceptor(spec.name, policy, auth_mode=settings.auth.mode,
                                        dev_default_caller=settings.auth.dev_default_caller,
                                        accepting=spec.schema_ready)
        options = [("grpc.max_receive_message_length", 32 * 1024 * 1024),
                   ("grpc.so_reuseport", 0)]
        pool = futures.ThreadPoolExecutor(max_workers=settings.server.max_workers)
        self.server: grpc.Server | AsyncioServer
        if spec.asyncio:
            self.server = AsyncioServer(pool, interceptor.wrapped_handler, options, on_stop=spec.close_on_loop)
        else:
            self.server = grpc.server(pool, interceptors=[interceptor], options=options)
        spec.register(self.server)  # type: ignore[arg-type]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)  # type: ignore[arg-type]
        names = [spec.full_name, *spec.extra_service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]
        reflection.enable_server_reflection(
            names, self.server.grpc if isinstance(self.server, AsyncioServer) else self.server)
        address = f"{settings.server.host}:{settings.port_for(spec.name)}"
        if settings.auth.mode == "mtls":
            creds = grpc.ssl_server_credentials(
                [(Path(settings.server.tls_key_file).read_bytes(), Path(settings.server.tls_cert_file).read_bytes())],
                root_certificates=Path(settings.server.tls_client_ca_file).read_bytes(),
                require_client_auth=True,
            )
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        self.health_server = None
        if settings.server.health_port:
            self.health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_server.add_insecure_port(f"{settings.server.host}:{settings.server.health_port}")
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_readiness, name="readiness", daemon=True)

    def start(self) -> RunningServer:
        self.health.set("", SERVING)
        self._update_readiness()
        self.server.start()
        if self.health_server:
            self.health_server.start()
        self._watcher.start()
        log.info("serving", port=self.port, kind=self.spec.name)
        return self

    def _update_readiness(self) -> None:
        try:
            self.spec.readiness_check()
            status = SERVING
        except (TesseraError, OSError) as exc:
            status = NOT_SERVING
            log.warning("not_ready", error_type=type(exc).__name__)
        self.health.set(self.spec.full_name, status)

    def _watch_readiness(self) -> None:
        while not self._stop.wait(2.0):
            self._update_readiness()

    def stop(self, grace: float | None = None) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.health.enter_graceful_shutdown()
        grace = self.settings.server.grace_seconds if grace is None else grace
        self.server.stop(grace).wait(grace + 1)
        if self.health_server:
            self.health_server.stop(0)
        self.spec.close()
        log.info("stopped", kind=self.spec.name)

    def wait(self) -> None:
        self.server.wait_for_termination()


def serve_forever(running: RunningServer) -> None:
    """Blocks until SIGTERM or SIGINT, then drains in-flight calls within the grace period."""
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutdown_signal", kind=signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running.start()
    done.wait()
    running.stop()
