"""`make bench`: runs the benchmarks and prints their figures (recorded in docs/benchmarks.md).

    python -m bench                       # the default set, sized for a 2-core laptop
    python -m bench accuracy --persons 5000
    python -m bench realtime --persons 100000
    python -m bench bulk --persons 400000      # ≈ 1M accounts
    python -m bench consent --persons 100000 --events 1000000
"""

from __future__ import annotations

import argparse

NAMES = {"choices": ("realistic", "uniform"), "default": "realistic",
         "help": "name frequencies: German (default) or uniform over common names (figures before 2026-12-08)"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench")
    p = sub.add_parser("accuracy", help="pairwise P/R/F1 and trap groups vs plain Splink and naive union")
    p.add_argument("--persons", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.95, help="link threshold (match probability)")
    p.add_argument("--names", **NAMES)
    p.add_argument("--json")
    p = sub.add_parser("realtime", help="real-time link latency through gRPC with N persons loaded")
    p.add_argument("--persons", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=2000)
    p = sub.add_parser("bulk", help="bulk import end to end: throughput, peak memory, accuracy")
    p.add_argument("--persons", type=int, default=40_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trap-report", help="write each wrongly merged trap group's accounts here (JSON lines)")
    p.add_argument("--names", **NAMES)
    p = sub.add_parser("consent", help="consent check latency/throughput, batch check, ledger verification")
    p.add_argument("--persons", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    if args.bench == "realtime":
        from bench import realtime

        realtime.main(args)
        return
    if args.bench == "bulk":
        from bench import bulk

        bulk.main(args)
        return
    if args.bench == "consent":
        from bench import consent

        consent.main(args)
        return
    if args.bench in (None, "accuracy"):
        from bench import accuracy

        if args.bench is None:
            args = argparse.Namespace(persons=5000, seed=1, json=None, threshold=0.95, names="realistic")
        accuracy.main(args)


if __name__ == "__main__":
    main()
