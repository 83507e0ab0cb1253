"""`tessera consent …`: ledger verification for the DPO."""

from __future__ import annotations

import argparse
import sys

import grpc
from tessera.consent.v1 import consent_pb2 as pb
from tessera.consent.v1 import consent_pb2_grpc

from services.common.auth import CALLER_HEADER
from services.common.config import load_settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    consent = sub.add_parser("consent", help="consent operations: ledger verification")
    csub = consent.add_subparsers(dest="consent_command", required=True)
    p = csub.add_parser("verify", help="verify the consent ledger's hash chain end to end")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_verify)


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
