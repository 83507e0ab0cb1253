"""`tessera identity …`: bulk import (resumable, with progress) and model training.

The import talks to the running identity service. Its progress lives next to the local state
(`$TESSERA_HOME/imports/`), keyed by the input file's path, size and modification time, so an
interrupted import resumes after the last batch the service acknowledged; accounts are upserted
by (source, id), so re-sending a batch never duplicates anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.type.v1 import subject_pb2

from services.common.auth import CALLER_HEADER
from services.common.config import Settings, load_settings
from services.common.protos import IDENTIFIER_ENUMS
from services.identity.domain.normalize import InvalidAccount, normalize_account


def add_commands(sub: argparse._SubParsersAction) -> None:
    identity = sub.add_parser("identity", help="identity operations: bulk import, model training")
    isub = identity.add_subparsers(dest="identity_command", required=True)
    p = isub.add_parser("import", help="link a JSON Lines file of accounts (DESIGN.md §6); resumable")
    p.add_argument("file", help="JSON Lines file, or - for standard input (not resumable)")
    p.add_argument("--assignments", help="write each account's final person id to this JSON Lines file")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--restart", action="store_true", help="ignore saved progress and start from the top")
    p.set_defaults(func=cmd_import)
    p = isub.add_parser("train", help="train a new matching model from the accounts in the graph")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)


@dataclass
class Progress:
    """Saved after every acknowledged batch: byte offset and line number to resume from."""

    path: Path
    offset: int = 0
    line: int = 0
    accounts: int = 0
    bad_lines: int = 0

    @classmethod
    def load(cls, path: Path) -> Progress:
        if path.exists():
            data = json.loads(path.read_text())
            return cls(path=path, **data)
        return cls(path=path)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"offset": self.offset, "line": self.line, "accounts": self.accounts,
                                   "bad_lines": self.bad_lines}))
        os.replace(tmp, self.path)


def _raw_to_input(raw: dict[str, Any]) -> pb.AccountInput:
    acc = pb.AccountInput(ref=subject_pb2.AccountRef(source=str(raw["source"]), external_id=str(raw["id"])))
    for key, kind in (("emails", "email"), ("phones", "phone"), ("logins", "login"), ("loyalty_cards", "loyalty")):
        for value in raw.get(key) or []:
            acc.identifiers.add(kind=IDENTIFIER_ENUMS[kind], value=str(value))
    for social in raw.get("social") or []:
        acc.identifiers.add(kind=IDENTIFIER_ENUMS["social"],
                            value=f"{social.get('provider', '')}:{social.get('handle', '')}")
    for key in ("given_name", "family_name", "birth_date"):
        if raw.get(key):
            setattr(acc.attributes, key, str(raw[key]))
    address = raw.get("address") or {}
    for key in ("street", "postcode", "city", "region", "country"):
        if address.get(key):
            setattr(acc.attributes.address, key, str(address[key]))
    return acc


def parse_line(text: str, default_region: str) -> tuple[dict[str, Any] | None, str | None]:
    """(raw account, None) for a usable line, (None, reason) for a bad one, (None, None) if blank."""
    if not text.strip():
        return None, None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(raw, dict):
        return None, "each line must be a JSON object"
    try:
        normalize_account(raw, default_region=default_region)
    except InvalidAccount as exc:
        return None, "; ".join(f"{f}: {d}" for f, d in exc.violations)
    return raw, None


def _state_dir(settings: Settings) -> Path:
    d = settings.home_path / "imports"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _import_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]


class _Linker:
    """A bidirectional BatchLinkAccounts stream used in lock step: one batch out, one answer back."""

    def __init__(self, stub: identity_pb2_grpc.IdentityServiceStub):
        self._requests: queue.Queue = queue.Queue()
        self._responses = stub.BatchLinkAccounts(iter(self._requests.get, None),
                                                 metadata=[(CALLER_HEADER, "tessera-cli")])

    def link(self, accounts: list[pb.AccountInput]) -> list[pb.LinkAccountResponse]:
        self._requests.put(pb.BatchLinkAccountsRequest(requests=[pb.LinkAccountRequest(account=a) for a in accounts]))
        return list(next(self._responses).responses)

    def close(self) -> None:
        self._requests.put(None)


def run_import(path: str, *, settings: Settings, assignments: str | None, batch_size: int, restart: bool,
               out: TextIO = sys.stderr) -> int:
    """Imports a file; returns the number of bad lines. Raises grpc.RpcError if the service fails."""
    stdin = path == "-"
    state_dir = _state_dir(settings)
    key = "stdin" if stdin else _import_key(Path(path))
    progress = Progress(state_dir / f"{key}.progress.json") if stdin or restart else \
        Progress.load(state_dir / f"{key}.progress.json")
    sidecar = state_dir / f"{key}.persons.jsonl"
    if progress.offset == 0 and sidecar.exists():
        sidecar.unlink()
    if progress.offset:
        print(f"resuming at line {progress.line + 1} ({progress.accounts} accounts already linked)", file=out)
    channel = grpc.insecure_channel(settings.clients.identity_addr)
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    linker = _Linker(stub)
    started = time.monotonic()
    done_at_start = progress.accounts
    handle = sys.stdin.buffer if stdin else open(path, "rb")  # noqa: SIM115
    try:
        if progress.offset:
            handle.seek(progress.offset)
        batch: list[tuple[dict[str, Any], pb.AccountInput]] = []
        line_no, offset = progress.line, progress.offset

        def flush() -> None:
            nonlocal batch
            if batch:
                responses = linker.link([acc for _, acc in batch])
                with sidecar.open("a") as fh:
                    for (raw, _), resp in zip(batch, responses, strict=True):
                        fh.write(json.dumps({"source": str(raw["source"]), "id": str(raw["id"]),
                                             "person_id": resp.person.name.removeprefix("persons/")}) + "\n")
                progress.accounts += len(batch)
                batch = []
            progress.offset, progress.line = offset, line_no
            if not stdin:
                progress.save()
            rate = (progress.accounts - done_at_start) / max(time.monotonic() - started, 1e-9)
            print(f"\rline {line_no:,}  accounts {progress.accounts:,}  bad {progress.bad_lines:,}  {rate:,.0f}/s",
                  end="", file=out, flush=True)

        for raw_line in handle:
            line_no += 1
            offset += len(raw_line)
            raw, problem = parse_line(raw_line.decode("utf-8", errors="replace"), settings.identity.default_region)
            if problem:
                progress.bad_lines += 1
                print(f"\nline {line_no}: {problem}", file=out)
            elif raw is not None:
                batch.append((raw, _raw_to_input(raw)))
            if len(batch) >= batch_size:
                flush()
        flush()
        print("", file=out)
    finally:
        linker.close()
        if not stdin:
            handle.close()
    if progress.accounts and not _has_model(stub):
        print("no matching model yet: training the first one on the imported accounts …", file=out)
        model = stub.TrainModel(pb.TrainModelRequest(), metadata=[(CALLER_HEADER, "tessera-cli")])
        print(f"model {model.version} trained on {model.training_records:,} accounts; graph re-linked", file=out)
    if assignments:
        write_assignments(stub, sidecar, Path(assignments))
        print(f"wrote final person ids to {assignments}", file=out)
    channel.close()
    print(f"done: {progress.accounts:,} accounts linked, {progress.bad_lines:,} bad lines", file=out)
    return progress.bad_lines


def _has_model(stub: identity_pb2_grpc.IdentityServiceStub) -> bool:
    try:
        stub.GetModel(pb.GetModelRequest(), metadata=[(CALLER_HEADER, "tessera-cli")])
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def write_assignments(stub: identity_pb2_grpc.IdentityServiceStub, sidecar: Path, target: Path) -> None:
    """Persons may have merged after an account was linked: resolve every person to its survivor."""
    latest: dict[tuple[str, str], str] = {}
    if sidecar.exists():
        with sidecar.open() as fh:
            for line in fh:
                row = json.loads(line)
                latest.pop((row["source"], row["id"]), None)
                latest[(row["source"], row["id"])] = row["person_id"]
    final: dict[str, str] = {}
    for person_id in set(latest.values()):
        person = stub.GetPerson(pb.GetPersonRequest(name=f"persons/{person_id}"),
                                metadata=[(CALLER_HEADER, "tessera-cli")])
        final[person_id] = person.name.removeprefix("persons/")
    tmp = target.with_suffix(target.suffix + ".tmp")
    with tmp.open("w") as fh:
        for (source, external_id), person_id in latest.items():
            fh.write(json.dumps({"source": source, "id": external_id, "person_id": final[person_id]}) + "\n")
    os.replace(tmp, target)


def cmd_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        bad = run_import(args.file, settings=settings, assignments=args.assignments, batch_size=args.batch_size,
                         restart=args.restart)
    except grpc.RpcError as exc:
        print(f"\nimport stopped: identity service answered {exc.code().name}: {exc.details()}\n"
              "run the same command again to resume", file=sys.stderr)
        return 1
    return 0 if bad == 0 else 3


def cmd_train(args: argparse.Namespace) -> int:
    settings = load_settings()
    with grpc.insecure_channel(settings.clients.identity_addr) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        try:
            model = stub.TrainModel(pb.TrainModelRequest(seed=args.seed), metadata=[(CALLER_HEADER, "tessera-cli")])
        except grpc.RpcError as exc:
            print(f"training failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"model {model.version} trained on {model.training_records:,} accounts")
    return 0

