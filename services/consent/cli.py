"""`tessera consent …`: ledger verification for the DPO, and rebuilding the materialised consent
state from the ledger for operators."""

from __future__ import annotations

import argparse
import sys

import grpc
from tessera.consent.v1 import consent_pb2 as pb
from tessera.consent.v1 import consent_pb2_grpc

from services.common.auth import CALLER_HEADER
from services.common.config import load_settings
from services.common.graph.factory import connect
from services.consent.store import ConsentStore


def add_commands(sub: argparse._SubParsersAction) -> None:
    consent = sub.add_parser("consent", help="consent operations: ledger verification, state rebuild")
    csub = consent.add_subparsers(dest="consent_command", required=True)
    p = csub.add_parser("verify", help="verify the consent ledger's hash chain end to end")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_verify)
    r = csub.add_parser("rebuild-state",
                        help="derive the materialised current consent state from the ledger again "
                             "(stop the consent service first); talks to the graph store directly")
    r.set_defaults(func=cmd_rebuild_state)


def cmd_rebuild_state(args: argparse.Namespace) -> int:
    settings = load_settings()
    graph = connect(settings.graph, settings.graph_password())
    try:
        def progress(done: int, total: int) -> None:
            print(f"\rreplayed {done:,} / {total:,} events", end="", file=sys.stderr, flush=True)

        events = ConsentStore(graph).rebuild_states(fresh=True, progress=progress)
    finally:
        graph.close()
    print(f"\nconsent state rebuilt from {events:,} ledger events")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    settings = load_settings()
    with grpc.insecure_channel(settings.clients.consent_addr) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        try:
            result = stub.VerifyLedger(pb.VerifyLedgerRequest(), timeout=args.timeout,
                                       metadata=[(CALLER_HEADER, "tessera-cli")])
        except grpc.RpcError as exc:
            print(f"verification failed to run: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    if result.valid:
        print(f"ledger valid: {result.checked_events:,} events, head {result.head_hash}")
        return 0
    print(f"LEDGER INVALID at sequence {result.first_invalid_sequence}: {result.reason} "
          f"({result.checked_events:,} events checked)")
    return 1
