"""Bulk import end to end: `tessera identity import FILE --mode bulk` against an identity service
process on an empty embedded FalkorDB, with its wall time per phase, peak memory and accuracy.

    python -m bench bulk --persons 400000      # ≈ 1M accounts
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import local_stack, peak_rss_mib
from bench.metrics import score, trap_report
from bench.synth import generate

ROOT = Path(__file__).resolve().parent.parent


def write_population(path: Path, persons: int, seed: int, names: str = "realistic"
                     ) -> tuple[dict[str, str], dict[str, str]]:
    truth, traps = {}, {}
    with path.open("w") as fh:
        for accounts, person, trap in generate(persons, seed, names):
            for acc in accounts:
                fh.write(json.dumps(acc, ensure_ascii=False) + "\n")
                truth[f"{acc['source']}:{acc['id']}"] = person
            if trap:
                traps[person] = trap
    return truth, traps


LINK_PHASES = {"reading accounts": "reading", "training the first model": "training",
               "scoring pairs with Splink": "scoring", "deciding persons": "deciding", "writing persons": "writing"}


def link_phases(stderr: str) -> dict[str, int]:
    """Seconds per phase of LinkStagedAccounts, from the CLI's progress lines (each carries the
    seconds since linking started); coarse: the CLI prints whole seconds."""
    starts: dict[str, int] = {}
    for name, total in re.findall(r"(reading accounts|training the first model|scoring pairs with Splink|"
                                  r"deciding persons|writing persons)[^(\r\n]*\(([\d,]+) s\)", stderr):
        starts.setdefault(LINK_PHASES[name], int(total.replace(",", "")))
    linked = re.search(r"linked [\d,]+ accounts.*?\(([\d,]+) s\)", stderr)
    end = int(linked.group(1).replace(",", "")) if linked else None
    ordered = sorted(starts.items(), key=lambda kv: kv[1])
    out = {}
    for i, (phase, start) in enumerate(ordered):
        stop = ordered[i + 1][1] if i + 1 < len(ordered) else end
        if stop is not None:
            out[phase] = stop - start
    return out


def run(persons: int, seed: int = 1, trap_report_path: Path | None = None, names: str = "realistic"
        ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "accounts.jsonl", Path(tmp) / "persons.jsonl"
        t0 = time.perf_counter()
        truth, traps = write_population(data, persons, seed, names)
        generate_seconds = time.perf_counter() - t0
        load_before = os.getloadavg()
        with local_stack("identity") as stack:
            env = {**stack.env, "TESSERA_CLIENTS_IDENTITY_ADDR": stack.env["TESSERA_CLIENTS_IDENTITY_ADDR"]}
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "services.common.cli", "identity", "import", str(data), "--mode", "bulk",
                 "--batch-size", "1000"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            import_seconds = time.perf_counter() - t0
            if done.returncode not in (0, 3):
                raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
            staged_at = re.findall(r"staged [\d,]+\s+bad [\d,]+\s+([\d,]+)/s", done.stderr)
            linked = re.search(r"linked ([\d,]+) accounts.*?\(([\d,]+) s\)", done.stderr)
            rss = {name: peak_rss_mib(pid) for name, pid in stack.pids.items()}
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "services.common.cli", "identity", "import", str(data), "--mode", "bulk",
                 "--assignments", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            assignments_seconds = time.perf_counter() - t0
        predicted = {}
        for line in out.read_text().splitlines():
            row = json.loads(line)
            predicted[f"{row['source']}:{row['id']}"] = row["person_id"]
        scores = score(predicted, truth, traps)
        if trap_report_path is not None:
            write_trap_report(trap_report_path, data, trap_report(predicted, truth, traps))
        return {
            "persons": persons, "accounts": len(truth), "generate_seconds": round(generate_seconds, 1),
            "import_seconds": round(import_seconds, 1),
            "accounts_per_second": round(len(truth) / import_seconds),
            "staging_accounts_per_second": staged_at[-1] if staged_at else None,
            "link_seconds": int(linked.group(2).replace(",", "")) if linked else None,
            "link_phases_seconds": link_phases(done.stderr),
            "assignments_seconds": round(assignments_seconds, 1),
            "peak_rss_mib": rss,
            "precision": round(scores.precision, 4), "recall": round(scores.recall, 4), "f1": round(scores.f1, 4),
            "trap_groups_merged": f"{scores.trap_groups_merged} / {scores.trap_groups}",
            # Two cores, shared: the 1-minute load average before and after, next to every figure.
            "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        }


def write_trap_report(path: Path, data: Path, merged: list[dict[str, Any]]) -> None:
    """One JSON line per wrongly merged trap group, each account with its input record."""
    wanted = {account for group in merged for c in group["clusters"] for account, _ in c["accounts"]}
    records = {}
    with data.open() as fh:
        for line in fh:
            row = json.loads(line)
            key = f"{row['source']}:{row['id']}"
            if key in wanted:
                records[key] = row
    with path.open("w") as out:
        for group in merged:
            for c in group["clusters"]:
                c["accounts"] = [{"person": person, "record": records[account]} for account, person in c["accounts"]]
            out.write(json.dumps(group, ensure_ascii=False) + "\n")


def main(args: Any) -> None:
    report = Path(args.trap_report) if args.trap_report else None
    print(json.dumps(run(args.persons, args.seed, report, args.names), indent=2))
