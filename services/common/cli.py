"""The `tessera` command: serve one service, run the whole local stack, check health, and the
operator commands of each service (bulk import, training, ledger verification)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from services.common.config import SERVICES, ConfigError, load_settings

HEALTH_NAMES = {
    "identity": "tessera.identity.v1.IdentityService",
    "consent": "tessera.consent.v1.ConsentService",
    "profile": "tessera.profile.v1.ProfileService",
}


def _settings_or_exit() -> Any:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    from services.common.server import RunningServer, serve_forever

    settings = _settings_or_exit()
    builder = service_builder(args.service)
    from services.common.runtime import build_runtime

    runtime = build_runtime(args.service, settings)
    spec = builder(runtime)
    serve_forever(RunningServer(spec, settings))
    return 0


def service_builder(service: str) -> Callable:
    if service == "identity":
        from services.identity.app import build_service
    elif service == "consent":
        from services.consent.app import build_service
    else:
        from services.profile.app import build_service
    return build_service


def cmd_run(args: argparse.Namespace) -> int:
    """Starts embedded FalkorDB and the three services; Ctrl-C or SIGTERM stops them all."""
    from urllib.parse import urlparse

    from services.common.falkordb_server import EmbeddedFalkorDB

    settings = _settings_or_exit()
    home = settings.home_path
    port = urlparse(settings.graph.uri).port or 6379
    store = EmbeddedFalkorDB(home / "falkordb", port)
    print(f"tessera: starting FalkorDB on 127.0.0.1:{port} (data in {home / 'falkordb'})", flush=True)
    store.start()
    env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_GRAPH_URI": store.uri}
    children: list[subprocess.Popen] = []
    stopping = threading.Event()

    def stop(_signum: int = 0, _frame: Any = None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for service in SERVICES:
            children.append(subprocess.Popen([sys.executable, "-m", "services.common.cli", "serve", service],
                                             env=env))
        for service in SERVICES:
            print(f"tessera: {service} on 127.0.0.1:{settings.port_for(service)}", flush=True)
        while not stopping.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(f"tessera: a service exited with {child.returncode}; stopping", file=sys.stderr)
                    stopping.set()
        return 0 if all(c.poll() is None for c in children) else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.server.grace_seconds + 5
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        store.stop()
        print("tessera: stopped", flush=True)


def cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = _settings_or_exit()
    addresses = {"identity": settings.clients.identity_addr, "consent": settings.clients.consent_addr,
                 "profile": settings.clients.profile_addr}
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        print(f"tessera health: unknown service(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    worst = 0
    for service in args.services or SERVICES:
        with grpc.insecure_channel(addresses[service]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_NAMES[service]),
                                      timeout=args.timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                status = f"UNREACHABLE ({exc.code().name})"
        print(f"{service:9} {addresses[service]:22} {status}")
        if status != "SERVING":
            worst = 1
    return worst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve one service (identity, consent or profile)")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("run", help="run the whole local stack: embedded FalkorDB and all three services")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("health", help="report each service's gRPC health")
    p.add_argument("services", nargs="*", metavar="SERVICE", help="identity, consent, profile (default: all)")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_health)
    from services.consent.cli import add_commands as add_consent
    from services.identity.cli import add_commands as add_identity

    add_identity(sub)
    add_consent(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
