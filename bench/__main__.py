"""`python -m bench [NAME ...] [--json] [--iterations N]`: run benchmarks, print a table. Several
benchmarks run one after another, each in a fresh interpreter: the caches, threads and heap one
leaves behind would otherwise weigh on the next (the ingest rows lost 4-5% after rule matching's
50 journeys)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.result import Result


def _e2e(iterations: int) -> list[Result]:
    from bench import e2e_latency

    return e2e_latency.run(iterations)


def _dispatch(iterations: int) -> list[Result]:
    from bench import dispatch

    return dispatch.run(max(iterations, 20))


def _ingest(iterations: int) -> list[Result]:
    from bench import ingest

    return ingest.run(iterations)


def _rule_matching(iterations: int) -> list[Result]:
    from bench import rule_matching

    return rule_matching.run(iterations)


def _sweeper(_iterations: int) -> list[Result]:
    from bench import sweeper

    return sweeper.run()


def _simulate(iterations: int) -> list[Result]:
    from bench import simulate

    return simulate.run(max(iterations, 200) * 10)  # appointments


def _writeback(iterations: int) -> list[Result]:
    from bench import writeback

    return writeback.run(max(iterations, 50))


BENCHMARKS: dict[str, Callable[[int], list[Result]]] = {
    "e2e_latency": _e2e,
    "dispatch": _dispatch,
    "rule_matching": _rule_matching,
    "ingest": _ingest,
    "sweeper": _sweeper,
    "simulate": _simulate,
    "writeback": _writeback,
}


def _table(results: list[Result]) -> str:
    rows = [("benchmark", "value", "baseline", "ratio", "note")]
    rows += [(r.name, f"{r.value:.2f} {r.unit}", f"{r.baseline:.2f} {r.unit}",
              f"{r.ratio:.2f}x", r.note) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _isolated(name: str, iterations: int) -> list[Result]:
    """One benchmark run by a fresh `python -m bench` process; its results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        subprocess.run([sys.executable, "-m", "bench", name, "--iterations", str(iterations),
                        "--results-to", str(out)], check=True,
                       cwd=Path(__file__).resolve().parent.parent)
        return [Result(**json.loads(line)) for line in out.read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--iterations", type=int, default=100)
    # Internal: run in this process and write the results here (one JSON object per line).
    parser.add_argument("--results-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    names = args.names or list(BENCHMARKS)
    results: list[Result] = []
    if args.results_to is not None or len(names) == 1:
        for name in names:
            results.extend(BENCHMARKS[name](args.iterations))
    else:
        for name in names:
            results.extend(_isolated(name, args.iterations))
    if args.results_to is not None:
        Path(args.results_to).write_text("".join(
            json.dumps(dataclasses.asdict(result)) + "\n" for result in results))
        return 0
    if args.json:
        for result in results:
            sys.stdout.write(json.dumps(result.as_json()) + "\n")
    else:
        sys.stdout.write(_table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
