"""Real-time link latency through gRPC with N persons in the graph (after the first model).

    python -m bench realtime --persons 100000 --samples 2000
"""

from __future__ import annotations

import resource
import time
from typing import Any

from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc

from bench.harness import local_stack, percentiles
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


def run(persons: int, samples: int, seed: int = 1) -> dict[str, Any]:
    with local_stack("identity") as stack:
        stub = identity_pb2_grpc.IdentityServiceStub(stack.channels["identity"])
        started = time.perf_counter()
        loaded = sum(len(r.responses) for r in stub.BatchLinkAccounts(_batches(persons, seed)))
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        model = stub.TrainModel(pb.TrainModelRequest(seed=seed))
        train_seconds = time.perf_counter() - started
        latencies = []
        for i, (accounts, _p, _t) in enumerate(generate(samples, seed + 1000)):
            raw = dict(accounts[0], id=f"rt-{i}")
            request = pb.LinkAccountRequest(account=_raw_to_input(raw))
            t0 = time.perf_counter()
            stub.LinkAccount(request)
            latencies.append((time.perf_counter() - t0) * 1000)
        return {"persons": persons, "accounts_loaded": loaded, "load_seconds": round(load_seconds, 1),
                "load_accounts_per_second": round(loaded / load_seconds, 1),
                "train_and_relink_seconds": round(train_seconds, 1), "model": model.version,
                "link": percentiles(latencies),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(args: Any) -> None:
    import json

    print(json.dumps(run(args.persons, args.samples), indent=2))
