"""Consent benchmarks through gRPC: check latency and throughput, batch check, ledger verification.

    python -m bench consent --persons 100000 --events 1000000 --samples 5000
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from tessera.consent.v1 import consent_pb2 as cpb
from tessera.consent.v1 import consent_pb2_grpc
from tessera.identity.v1 import identity_pb2 as ipb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.type.v1 import subject_pb2

from bench.harness import local_stack, percentiles
from bench.realtime import _stage_batches
from services.common.config import GraphSettings
from services.common.crypto import BlindIndex, load_or_create_key
from services.common.graph.factory import connect
from services.consent.domain import ledger
from services.consent.store import ConsentStore

PURPOSES = ["newsletter-email", "sms-marketing", "personalised-offers", "push-offers"]
KINDS = ["grant"] * 6 + ["withdraw", "deny"]
CHECKED_PURPOSE = "purposes/newsletter-email"  # what every check and batch asks about
STREAM_CHECKS = 200  # checks per StreamCheckConsent stream that h2load sends


def _load_events(store: ConsentStore, refs: list[str], total: int, batch: int = 5000) -> float:
    rng = random.Random(7)
    seq, head = store.ledger_head(ledger.GENESIS)
    notice = hashlib.sha256(b"notice").hexdigest()
    started = time.perf_counter()
    now = int(time.time() * 1000) - 10_000_000
    while seq < total:
        events = []
        for _ in range(min(batch, total - seq)):
            seq += 1
            draft = {"event_id": uuid.uuid4().hex, "kind": rng.choice(KINDS), "subject_ref": rng.choice(refs),
                     "person_id": None, "purpose_id": rng.choice(PURPOSES), "purpose_version": 1, "channel": None,
                     "recorded_at": now + seq, "effective_at": now + seq, "expires_at": None,
                     "source_system": "bench", "collection_method": "import", "notice_version": "1",
                     "notice_sha256": notice, "evidence_ref": None, "request_id": f"bench-{seq}", "payload": None}
            event = ledger.seal(draft, seq=seq, prev_hash=head)
            head = event["hash"]
            events.append({k: v for k, v in event.items() if v is not None})
        prev_seq = events[0]["seq"] - 1
        prev_hash = events[0]["prev_hash"]
        if not store.append_batch(events, prev_seq, prev_hash):
            raise RuntimeError("ledger head moved during the bench load")
    return time.perf_counter() - started


def run(persons: int, events: int, samples: int) -> dict[str, Any]:
    with local_stack("identity", "consent") as stack:
        identity = identity_pb2_grpc.IdentityServiceStub(stack.channels["identity"])
        consent = consent_pb2_grpc.ConsentServiceStub(stack.channels["consent"])
        refs_raw: list[tuple[str, str]] = []

        def noting_refs(batches: Iterator[ipb.StageAccountsRequest]) -> Iterator[ipb.StageAccountsRequest]:
            for batch in batches:
                refs_raw.extend((a.ref.source, a.ref.external_id) for a in batch.accounts)
                yield batch

        # The population goes in through the bulk path (stage, then one link that trains the
        # model), as an initial import would: linked one by one, 100k persons take over 15 minutes.
        population_started = time.perf_counter()
        sum(r.staged for r in identity.StageAccounts(noting_refs(_stage_batches(persons, 3))))
        list(identity.LinkStagedAccounts(ipb.LinkStagedAccountsRequest(seed=3)))
        population_seconds = time.perf_counter() - population_started
        # Events go straight into the ledger in sealed batches (as a consent-history import
        # would); the services read them exactly as they read events recorded one by one.
        store = ConsentStore(connect(GraphSettings(uri=stack.graph_uri, database="bench")))
        blind = BlindIndex(load_or_create_key(stack.home / "keys" / "blind-index"))
        refs = [f"account:{blind.account_token(s, e)}" for s, e in refs_raw]
        load_seconds = _load_events(store, refs, events)
        rng = random.Random(11)
        subjects = [subject_pb2.Subject(account=subject_pb2.AccountRef(source=s, external_id=e))
                    for s, e in rng.sample(refs_raw, min(len(refs_raw), 20_000))]

        def check(subject: subject_pb2.Subject) -> None:
            consent.CheckConsent(_check_request(subject))

        for s in subjects[:2000]:  # a running service has its scope cache warm
            check(s)
        latencies = []
        for i in range(samples):
            t0 = time.perf_counter()
            check(subjects[i % min(2000, len(subjects))])
            latencies.append((time.perf_counter() - t0) * 1000)
        done = [0] * 8
        stop = threading.Event()

        def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                check(subjects[i % min(2000, len(subjects))])
                i += 8
                done[k] += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(10)
        stop.set()
        for t in threads:
            t.join()
        throughput = sum(done) / (time.perf_counter() - t0)
        address = stack.env["TESSERA_CLIENTS_CONSENT_ADDR"]
        light_throughput = asyncio.run(_async_throughput(address, subjects[:2000]))
        h2load_requests = [_check_request(s) for s in subjects[:4]]
        native = _h2load_throughput(address, "CheckConsent", _unary_bodies(consent, h2load_requests),
                                    server_pid=stack.pids["consent"])
        streamed = _h2load_throughput(address, "StreamCheckConsent", _stream_bodies(consent, h2load_requests),
                                      server_pid=stack.pids["consent"])
        batch = subjects[:10_000]
        batch_seconds = []
        for _ in range(2):  # the second time with every subject's scope cached, as for a campaign re-checked
            t0 = time.perf_counter()
            consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=batch, purpose=CHECKED_PURPOSE),
                                      timeout=600)
            batch_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verified = consent.VerifyLedger(cpb.VerifyLedgerRequest(), timeout=3600)
        verify_seconds = time.perf_counter() - t0
        return {"persons": persons, "accounts": len(refs), "population_load_seconds": round(population_seconds, 1),
                "events": events,
                "event_load_seconds": round(load_seconds, 1), "check_warm_cache": percentiles(latencies),
                "checks_per_second_8_threads": round(throughput),
                "checks_per_second_async_client": round(light_throughput),
                "checks_per_second_h2load": native,
                "checks_per_second_h2load_stream": streamed,
                "batch_check_seconds": round(batch_seconds[0], 2),
                "batch_check_seconds_scopes_cached": round(batch_seconds[1], 2),
                "batch_subjects": len(batch), "verify_seconds": round(verify_seconds, 1),
                "verify_valid": verified.valid, "verified_events": verified.checked_events}


def _check_request(subject: subject_pb2.Subject) -> cpb.CheckConsentRequest:
    return cpb.CheckConsentRequest(subject=subject, purpose=CHECKED_PURPOSE, channel=cpb.CHANNEL_EMAIL)


def _frame(message: Any) -> bytes:
    """A gRPC length-prefixed message, as it travels in a request body."""
    body = message.SerializeToString()
    return b"\0" + struct.pack(">I", len(body)) + body


def _unary_bodies(consent: consent_pb2_grpc.ConsentServiceStub, requests: list[cpb.CheckConsentRequest]
                  ) -> list[tuple[bytes, int, int]]:
    """(request body, bytes of one answer, checks per request) for CheckConsent calls."""
    return [(_frame(r), 5 + consent.CheckConsent(r).ByteSize(), 1) for r in requests]


def _stream_bodies(consent: consent_pb2_grpc.ConsentServiceStub, requests: list[cpb.CheckConsentRequest],
                   per_stream: int = STREAM_CHECKS) -> list[tuple[bytes, int, int]]:
    """The same for StreamCheckConsent: each stream sends `per_stream` checks of one subject."""
    out = []
    for r in requests:
        check = cpb.StreamCheckConsentRequest(subject=r.subject, purpose=r.purpose, channel=r.channel)
        [answer] = consent.StreamCheckConsent(iter([check]))
        if answer.WhichOneof("outcome") != "result":
            raise RuntimeError(f"the stream refused the bench's check: {answer.error}")
        out.append((_frame(check) * per_stream, 5 + answer.ByteSize(), per_stream))
    return out


def _h2load_throughput(address: str, method: str, bodies: list[tuple[bytes, int, int]], *, server_pid: int,
                       seconds: int = 10) -> dict[str, Any] | str:
    """Checks per second driven by nghttp2's `h2load`, a load generator in C (Debian package
    `nghttp2-client`): the Python clients above spend as much CPU per call as the service, and on
    two shared cores that caps what they can measure. One h2load process per request body (h2load
    sends one fixed body), two connections of eight streams each; a body holds one check
    (`CheckConsent`) or `STREAM_CHECKS` of them (`StreamCheckConsent`). h2load counts HTTP/2
    responses; gRPC errors are trailers-only responses without a body, so a check is counted as
    answered only by the bytes of its answer. Streams still open when the run ends count no
    check but spent CPU, so the stream figures lean low. The service's CPU per check says what
    binds it: one process of Python is bound by one core (the GIL) at 1 / (CPU per check)."""
    if shutil.which("h2load") is None:
        return "h2load not installed (apt-get install nghttp2-client)"
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, (body, _, _) in enumerate(bodies):
            path = Path(tmp) / f"check-{k}.bin"
            path.write_bytes(body)
            paths.append(path)
        started, cpu_before = time.perf_counter(), _cpu_seconds(server_pid)
        procs = [subprocess.Popen(
            ["h2load", "--duration", str(seconds), "--clients", "2", "--max-concurrent-streams", "8",
             "--threads", "1", "--header", "content-type: application/grpc", "--header", "te: trailers",
             "--data", str(path), f"http://{address}/tessera.consent.v1.ConsentService/{method}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for path in paths]
        outputs = [proc.communicate()[0] for proc in procs]
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds(server_pid) - cpu_before
    done = answered = 0.0
    for output, (_, answer_bytes, checks) in zip(outputs, bodies, strict=True):
        requests_line = re.search(r"requests: \d+ total, \d+ started, (\d+) done", output)
        data = re.search(r"B \((\d+)\) data", output)  # "486.34KB (498015) data": exact bytes
        if requests_line is None or data is None:
            raise RuntimeError(f"unexpected h2load output: {output[-500:]}")
        done += int(requests_line.group(1)) * checks
        answered += int(data.group(1)) / answer_bytes
    return {"checks_per_second": round(done / elapsed), "answered_share": round(min(answered / done, 1.0), 3),
            "server_cpu_ms_per_check": round(cpu / done * 1000, 3), "processes": len(bodies)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _async_throughput(address: str, subjects: list[subject_pb2.Subject], in_flight: int = 32,
                            seconds: float = 10.0) -> float:
    """Checks per second with a load generator that costs little CPU of its own (one asyncio
    client, 32 calls in flight), so that more of the two cores are left to the service."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        done = 0
        end = time.perf_counter() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < end:
                await stub.CheckConsent(_check_request(subjects[i % len(subjects)]))
                done += 1
                i += in_flight

        started = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(in_flight)))
        return done / (time.perf_counter() - started)


def main(args: Any) -> None:
    print(json.dumps(run(args.persons, args.events, args.samples), indent=2))

