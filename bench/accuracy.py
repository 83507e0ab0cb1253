"""Accuracy benchmark: Tessera vs plain Splink vs naive union-on-shared-identifiers, on the same
synthetic German retail population with ground truth and trap groups.

    python -m bench accuracy --persons 5000 --seed 1
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.metrics import score
from bench.synth import generate
from services.common.config import Settings
from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.runtime import build_runtime
from services.identity.app import build_identity
from services.identity.domain.model import predict_and_cluster, train
from services.identity.domain.normalize import normalize_account, to_model_record


def population(persons: int, seed: int, names: str = "realistic"
               ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    accounts, truth, traps = [], {}, {}
    for accs, person, trap in generate(persons, seed, names):
        for acc in accs:
            accounts.append(acc)
            truth[f"{acc['source']}:{acc['id']}"] = person
        if trap:
            traps[person] = trap
    return accounts, truth, traps


def _finder(parent: dict[str, str]) -> Callable[[str], str]:
    """`find` of a union-find over `parent` (path halving); union is `parent[find(a)] = find(b)`."""
    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    return find


def naive_union(accounts: list[dict[str, Any]]) -> dict[str, str]:
    parent: dict[str, str] = {}
    find = _finder(parent)

    for acc in accounts:
        key = f"{acc['source']}:{acc['id']}"
        find(key)
        for ident in normalize_account(acc).identifiers:
            parent[find(key)] = find(f"{ident.kind}={ident.value}")
    return {f"{a['source']}:{a['id']}": find(f"{a['source']}:{a['id']}") for a in accounts}


def evidence_oracle(accounts: list[dict[str, Any]], truth: dict[str, str], *, names_alone: bool
                    ) -> dict[str, str]:
    """An oracle that links, inside each true person only, the accounts that share a normalised
    identifier, or carry the same given and family name (in either order) — with `names_alone`
    on that tie alone, otherwise only together with the same birth date or postcode —
    transitively. Its precision is 1 by construction. With `names_alone` its recall bounds what
    any linker can reach without linking on less than equal names; but equal names alone are
    also what namesakes share (thousands of pairs in a few thousand persons drawn from common
    German names), so no linker can take that tie as evidence, and the corroborated oracle is
    the one to measure against. A linker that tolerates typos may pass it."""
    parent: dict[str, str] = {}
    find = _finder(parent)

    for acc in accounts:
        key = f"{acc['source']}:{acc['id']}"
        person = truth[key]
        normalised = normalize_account(acc)
        ties = [f"{i.kind}={i.value}" for i in normalised.identifiers if i.links]
        if normalised.given_name and normalised.family_name:
            names = "names=" + "|".join(sorted((normalised.given_name, normalised.family_name)))
            if names_alone:
                ties.append(names)
            ties.extend(f"{names}/{what}={value}" for what, value in
                        (("born", normalised.birth_date), ("postcode", normalised.postcode)) if value)
        find(key)
        for tie in ties:
            parent[find(key)] = find(f"{person}/{tie}")
    return {key: find(key) for key in truth}


def plain_splink(accounts: list[dict[str, Any]], threshold: float, seed: int) -> dict[str, str]:
    records = [to_model_record(normalize_account(a)) for a in accounts]
    model = train(records, seed=seed)
    _pairs, clusters = predict_and_cluster(model, records, threshold=threshold)
    return clusters


def tessera(accounts: list[dict[str, Any]], seed: int, workdir: Path, threshold: float = 0.95
            ) -> tuple[dict[str, str], dict[str, float]]:
    store = EmbeddedFalkorDB(workdir / "graph", free_port()).start()
    try:
        settings = Settings().replace(home=workdir / "home", graph={"uri": store.uri, "database": "bench"},
                                      identity={"link_threshold": threshold,
                                                "review_threshold": min(threshold, 0.6)})
        runtime = build_runtime("identity", settings, configure_process=False)
        service = build_identity(runtime)
        from services.common import keystore
        from services.identity.store import SCHEMA

        runtime.graph.ensure_schema(SCHEMA)
        runtime.graph.ensure_schema(keystore.SCHEMA)
        started = time.perf_counter()
        for acc in accounts:
            service.link(acc)
        linked = time.perf_counter()
        service.train_model(seed)
        trained = time.perf_counter()
        out = {}
        for acc in accounts:
            key = f"{acc['source']}:{acc['id']}"
            row = service.store.account_person(service.account_id(acc["source"], acc["id"]))
            out[key] = service.get_person(row["person_id"]).person_id
        timings = {"link_seconds": linked - started, "train_and_relink_seconds": trained - linked}
        runtime.close()
        return out, timings
    finally:
        store.stop()


def run(persons: int, seed: int, threshold: float = 0.95, names: str = "realistic") -> dict[str, Any]:
    accounts, truth, traps = population(persons, seed, names)
    results: dict[str, Any] = {"persons": persons, "accounts": len(accounts), "seed": seed, "names": names,
                               "trap_groups": len(set(traps.values()))}
    with tempfile.TemporaryDirectory() as tmp:
        predicted, timings = tessera(accounts, seed, Path(tmp), threshold)
    results["tessera"] = {**score(predicted, truth, traps).__dict__, **timings}
    results["plain_splink"] = score(plain_splink(accounts, threshold, seed), truth, traps).__dict__
    results["naive_union"] = score(naive_union(accounts), truth, traps).__dict__
    for name, names_alone in (("oracle_corroborated", False), ("oracle_names_alone", True)):
        results[name] = score(evidence_oracle(accounts, truth, names_alone=names_alone), truth, traps).__dict__
    return results


def report(results: dict[str, Any]) -> str:
    lines = [f"persons {results['persons']:,} ({results['names']} names), accounts {results['accounts']:,}, "
             f"trap groups {results['trap_groups']}", "| system | precision | recall | F1 | trap groups merged |",
             "|---|---|---|---|---|"]
    for name in ("tessera", "plain_splink", "naive_union", "oracle_corroborated", "oracle_names_alone"):
        s = results[name]
        lines.append(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | "
                     f"{s['trap_groups_merged']} / {s['trap_groups']} |")
    return "\n".join(lines)


def main(args: Any) -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("splink").setLevel(logging.ERROR)
    results = run(args.persons, args.seed, args.threshold, args.names)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=lambda o: o.__dict__))

