"""`python -m bench.forecast_diff OUT [--large]`: write the forecasts of fixed exports (the demo,
the tests' synthetic months, the bench's export) as JSON and table files into OUT, so that two
trees' forecasts can be compared byte for byte (`diff -r OLD NEW`) after a change to the
pipeline. Each run prints the messages and this process's CPU seconds per export."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import simulate as bench_simulate
from outreach.core.settings import load_settings
from outreach.demo import DEMO_FIXTURES
from outreach.simulate import as_json, as_table, simulate

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _demo() -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(DEMO_FIXTURES.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--large", action="store_true",
                        help="also the bench's own export (2,000 appointments, about a minute)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shipped, library = ROOT / "rules" / "journeys", ROOT / "rules" / "journeys" / "library"
    settings = load_settings(database_url="sqlite:///unused.db")
    with tempfile.TemporaryDirectory(prefix="forecast-diff-") as tmp:
        rules = bench_simulate.journeys(Path(tmp))
        cases = [
            ("demo", shipped, _demo(), NOW),
            ("demo-library", library, _demo(), NOW),
            ("month80-bench", rules, bench_simulate.export(80, seed=11) + _demo(), NOW),
            ("month-library", library, bench_simulate.export(150, seed=3)[:400] + _demo(), NOW),
            ("bench300", rules, bench_simulate.export(300), bench_simulate.START),
        ]
        if args.large:
            cases.append(("bench2000", rules, bench_simulate.export(2000),
                          bench_simulate.START))
        for name, journeys, resources, now in cases:
            began = time.process_time()
            forecast = simulate(journeys, resources, now, settings)
            (args.out / f"{name}.json").write_text(as_json(forecast))
            (args.out / f"{name}.table").write_text(
                "\n".join([as_table(forecast), *forecast.notes]) + "\n")
            print(f"{name}: {forecast.summary['messages']} messages, "
                  f"CPU {time.process_time() - began:.2f} s", flush=True)


if __name__ == "__main__":
    main()
