"""Real-time link latency through gRPC with N persons in the graph (loaded in bulk, with a model).

    python -m bench realtime --persons 100000 --samples 2000
"""

from __future__ import annotations

import time
from typing import Any

from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc

from bench.harness import local_stack, peak_rss_mib, percentiles
from bench.synth import generate
from services.identity.cli import _raw_to_input


def _batches(persons: int, seed: int, size: int = 500) -> Any:
    batch = []
    for accounts, _person, _trap in generate(persons, seed):
        for raw in accounts:
            batch.append(pb.LinkAccountRequest(account=_raw_to_input(raw)))
            if len(batch) == size:
                yield pb.BatchLinkAccountsRequest(requests=batch)
                batch = []
    if batch:
        yield pb.BatchLinkAccountsRequest(requests=batch)


def _stage_batches(persons: int, seed: int, size: int = 1000) -> Any:
    for batch in _batches(persons, seed, size):
        yield pb.StageAccountsRequest(accounts=[r.account for r in batch.requests])


def run(persons: int, samples: int, seed: int = 1) -> dict[str, Any]:
    """Loads the population with the bulk path (stage, then one bulk link that trains the first
    model), then times `LinkAccount` of new accounts one at a time."""
    with local_stack("identity") as stack:
        stub = identity_pb2_grpc.IdentityServiceStub(stack.channels["identity"])
        started = time.perf_counter()
        loaded = sum(r.staged for r in stub.StageAccounts(_stage_batches(persons, seed)))
        stage_seconds = time.perf_counter() - started
        started = time.perf_counter()
        done = list(stub.LinkStagedAccounts(pb.LinkStagedAccountsRequest(seed=seed)))[-1]
        link_seconds = time.perf_counter() - started
        latencies = []
        for i, (accounts, _p, _t) in enumerate(generate(samples, seed + 1000)):
            raw = dict(accounts[0], id=f"rt-{i}")
            request = pb.LinkAccountRequest(account=_raw_to_input(raw))
            t0 = time.perf_counter()
            stub.LinkAccount(request)
            latencies.append((time.perf_counter() - t0) * 1000)
        return {"persons": persons, "accounts_loaded": loaded, "stage_seconds": round(stage_seconds, 1),
                "bulk_link_seconds": round(link_seconds, 1), "persons_in_graph": done.created_persons,
                "model": done.model_version, "link": percentiles(latencies),
                "peak_rss_mib": {name: peak_rss_mib(pid) for name, pid in stack.pids.items()}}


def main(args: Any) -> None:
    import json

    print(json.dumps(run(args.persons, args.samples), indent=2))
