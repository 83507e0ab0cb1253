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
from collections import deque
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

BULK_FROM = 10_000  # lines; below this, real-time linking is as fast and links as it goes
IN_FLIGHT = 2  # batches sent ahead of the last answer


def add_commands(sub: argparse._SubParsersAction) -> None:
    identity = sub.add_parser("identity", help="identity operations: bulk import, model training")
    isub = identity.add_subparsers(dest="identity_command", required=True)
    p = isub.add_parser("import", help="link a JSON Lines file of accounts (DESIGN.md §6); resumable")
    p.add_argument("file", help="JSON Lines file, or - for standard input (not resumable)")
    p.add_argument("--assignments", help="write each account's final person id to this JSON Lines file")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--mode", choices=("auto", "realtime", "bulk"), default="auto",
                   help=f"realtime: link account by account; bulk: stage all, then link all at once with "
                        f"Splink's predict and clustering; auto: bulk from {BULK_FROM:,} lines on")
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
    mode: str = ""  # realtime | bulk, fixed when the import starts
    phase: str = "reading"  # bulk: reading (staging) → linking → linked

    @classmethod
    def load(cls, path: Path) -> Progress:
        if path.exists():
            data = json.loads(path.read_text())
            return cls(path=path, **data)
        return cls(path=path)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"offset": self.offset, "line": self.line, "accounts": self.accounts,
                                   "bad_lines": self.bad_lines, "mode": self.mode, "phase": self.phase}))
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


class _Stream:
    """A bidirectional stream whose answers come in request order; several requests may be in
    flight, so that reading the file and the service's work overlap."""

    def __init__(self, method: Any):
        self._requests: queue.Queue = queue.Queue()
        self._responses = method(iter(self._requests.get, None), metadata=[(CALLER_HEADER, "tessera-cli")])

    def send(self, request: Any) -> None:
        self._requests.put(request)

    def receive(self) -> Any:
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)


def _choose_mode(path: str, requested: str) -> str:
    if requested != "auto":
        return requested
    if path == "-":
        return "realtime"
    with open(path, "rb") as fh:
        lines = sum(1 for _ in fh)
    return "bulk" if lines >= BULK_FROM else "realtime"


def run_import(path: str, *, settings: Settings, assignments: str | None, batch_size: int, restart: bool,
               mode: str = "auto", out: TextIO = sys.stderr) -> int:
    """Imports a file; returns the number of bad lines. Raises grpc.RpcError if the service fails."""
    stdin = path == "-"
    state_dir = _state_dir(settings)
    key = "stdin" if stdin else _import_key(Path(path))
    progress = Progress(state_dir / f"{key}.progress.json") if stdin or restart else \
        Progress.load(state_dir / f"{key}.progress.json")
    sidecar = state_dir / f"{key}.persons.jsonl"
    if progress.offset == 0 and sidecar.exists():
        sidecar.unlink()
    progress.mode = progress.mode or _choose_mode(path, mode)
    if progress.offset:
        print(f"resuming at line {progress.line + 1} ({progress.accounts} accounts already sent, "
              f"{progress.mode} mode)", file=out)
    channel = grpc.insecure_channel(settings.clients.identity_addr)
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    if progress.phase == "reading":
        _send_file(path, stub, progress, sidecar, settings, batch_size, out)
    if progress.mode == "bulk":
        if progress.phase == "linking":
            _link_staged(stub, out)
            progress.phase = "linked"
            if not stdin:
                progress.save()
    elif progress.accounts and not _has_model(stub):
        print("no matching model yet: training the first one on the imported accounts …", file=out)
        model = stub.TrainModel(pb.TrainModelRequest(), metadata=[(CALLER_HEADER, "tessera-cli")])
        print(f"model {model.version} trained on {model.training_records:,} accounts; graph re-linked", file=out)
    if assignments:
        written = write_assignments(stub, sidecar, Path(assignments))
        print(f"wrote the final person ids of {written:,} accounts to {assignments}", file=out)
    channel.close()
    print(f"done: {progress.accounts:,} accounts linked, {progress.bad_lines:,} bad lines", file=out)
    return progress.bad_lines


def _send_file(path: str, stub: identity_pb2_grpc.IdentityServiceStub, progress: Progress, sidecar: Path,
               settings: Settings, batch_size: int, out: TextIO) -> None:
    """Sends the file in batches (linked in real time, or staged), saving progress after each
    acknowledged batch; at the end of a bulk import the phase moves on to linking."""
    stdin = path == "-"
    bulk = progress.mode == "bulk"
    stream = _Stream(stub.StageAccounts if bulk else stub.BatchLinkAccounts)
    started = time.monotonic()
    done_at_start = progress.accounts
    handle = sys.stdin.buffer if stdin else open(path, "rb")  # noqa: SIM115
    try:
        if progress.offset:
            handle.seek(progress.offset)
        batch: list[tuple[dict[str, Any], pb.AccountInput]] = []
        line_no, offset = progress.line, progress.offset
        # Sent, not yet answered: (batch, file offset and line after it, bad lines up to there).
        in_flight: deque[tuple[list[tuple[dict[str, Any], pb.AccountInput]], int, int, int]] = deque()

        def acknowledge() -> None:
            sent, sent_offset, sent_line, bad_so_far = in_flight.popleft()
            answer = stream.receive()
            # Bulk: persons are decided only when linking; the assignments resolve them then.
            persons = [""] * len(sent) if bulk else [r.person.name.removeprefix("persons/") for r in answer.responses]
            with sidecar.open("a") as fh:
                for (raw, _), person in zip(sent, persons, strict=True):
                    fh.write(json.dumps({"source": str(raw["source"]), "id": str(raw["id"]),
                                         "person_id": person}) + "\n")
            progress.accounts += len(sent)
            progress.offset, progress.line, progress.bad_lines = sent_offset, sent_line, bad_so_far
            if not stdin:
                progress.save()
            rate = (progress.accounts - done_at_start) / max(time.monotonic() - started, 1e-9)
            verb = "staged" if bulk else "accounts"
            print(f"\rline {sent_line:,}  {verb} {progress.accounts:,}  bad {bad_so_far:,}  {rate:,.0f}/s",
                  end="", file=out, flush=True)

        def flush() -> None:
            nonlocal batch
            accounts = [acc for _, acc in batch]
            if bulk:
                stream.send(pb.StageAccountsRequest(accounts=accounts))
            else:
                stream.send(pb.BatchLinkAccountsRequest(requests=[pb.LinkAccountRequest(account=a) for a in accounts]))
            in_flight.append((batch, offset, line_no, bad_lines))
            batch = []
            while len(in_flight) > IN_FLIGHT:
                acknowledge()

        bad_lines = progress.bad_lines
        for raw_line in handle:
            line_no += 1
            offset += len(raw_line)
            raw, problem = parse_line(raw_line.decode("utf-8", errors="replace"), settings.identity.default_region)
            if problem:
                bad_lines += 1
                print(f"\nline {line_no}: {problem}", file=out)
            elif raw is not None:
                batch.append((raw, _raw_to_input(raw)))
            if len(batch) >= batch_size:
                flush()
        if batch or not in_flight:
            flush()
        while in_flight:
            acknowledge()
        print("", file=out)
    finally:
        stream.close()
        if not stdin:
            handle.close()
    progress.phase = "linking" if bulk else "linked"
    if not stdin:
        progress.save()


PHASE_NAMES = {pb.LinkStagedAccountsResponse.PHASE_READING: "reading accounts",
               pb.LinkStagedAccountsResponse.PHASE_TRAINING: "training the first model",
               pb.LinkStagedAccountsResponse.PHASE_SCORING: "scoring pairs with Splink",
               pb.LinkStagedAccountsResponse.PHASE_CLUSTERING: "deciding persons",
               pb.LinkStagedAccountsResponse.PHASE_WRITING: "writing persons"}


def _link_staged(stub: identity_pb2_grpc.IdentityServiceStub, out: TextIO) -> None:
    started = time.monotonic()
    last = None
    for step in stub.LinkStagedAccounts(pb.LinkStagedAccountsRequest(), metadata=[(CALLER_HEADER, "tessera-cli")]):
        if step.phase == pb.LinkStagedAccountsResponse.PHASE_DONE:
            print(f"\rlinked {step.linked_accounts:,} accounts: {step.created_persons:,} new persons, "
                  f"{step.merged_persons:,} persons merged, model {step.model_version or '-'} "
                  f"({time.monotonic() - started:,.0f} s)", file=out, flush=True)
            return
        name = PHASE_NAMES.get(step.phase, "linking")
        if last is not None and name != last:
            print("", file=out)  # keep the finished phase's last line
        last = name
        counts = f" {step.done:,}/{step.total:,}" if step.total else ""
        print(f"\r{name}{counts}  ({time.monotonic() - started:,.0f} s)", end="", file=out, flush=True)


def _has_model(stub: identity_pb2_grpc.IdentityServiceStub) -> bool:
    try:
        stub.GetModel(pb.GetModelRequest(), metadata=[(CALLER_HEADER, "tessera-cli")])
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def write_assignments(stub: identity_pb2_grpc.IdentityServiceStub, sidecar: Path, target: Path) -> int:
    """Every account's person as it stands now (after merges and bulk linking), resolved through
    identity a thousand accounts at a time; returns the number of accounts written."""
    accounts: dict[tuple[str, str], None] = {}
    if sidecar.exists():
        with sidecar.open() as fh:
            for line in fh:
                row = json.loads(line)
                accounts.pop((row["source"], row["id"]), None)
                accounts[(row["source"], row["id"])] = None
    refs = list(accounts)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with tmp.open("w") as fh:
        for start in range(0, len(refs), 1000):
            chunk = refs[start:start + 1000]
            request = pb.BatchResolveSubjectsRequest(subjects=[
                subject_pb2.Subject(account=subject_pb2.AccountRef(source=s, external_id=e)) for s, e in chunk])
            answer = stub.BatchResolveSubjects(request, metadata=[(CALLER_HEADER, "tessera-cli")])
            for (source, external_id), res in zip(chunk, answer.resolutions, strict=True):
                person = res.person.name.removeprefix("persons/") if res.HasField("person") else None
                fh.write(json.dumps({"source": source, "id": external_id, "person_id": person}) + "\n")
    os.replace(tmp, target)
    return len(refs)


def cmd_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        bad = run_import(args.file, settings=settings, assignments=args.assignments, batch_size=args.batch_size,
                         restart=args.restart, mode=args.mode)
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

