"""The benchmark runner stays runnable: its JSON lines carry name, value, baseline and ratio."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from bench.__main__ import main


def test_e2e_latency_prints_json_lines_with_a_baseline() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["e2e_latency", "--iterations", "3", "--json"]) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["name"] for r in rows] == ["booking_to_confirmation_p50",
                                         "booking_to_confirmation_p99"]
    for row in rows:
        assert row["unit"] == "ms" and row["value"] > 0 and row["baseline"] > 0
        assert abs(row["ratio"] - row["value"] / row["baseline"]) < 0.01


def test_several_benchmarks_each_run_in_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked for several, the runner starts `python -m bench NAME` for each and prints what
    they found, notes included: a benchmark's leftovers never weigh on the next."""
    from bench import __main__ as runner

    ran_here: list[str] = []
    monkeypatch.setitem(runner.BENCHMARKS, "rule_matching",
                        lambda _: ran_here.append("here") or [])
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["e2e_latency", "rule_matching", "--iterations", "3"]) == 0
    assert ran_here == []  # not in this process: a child ran the real benchmark
    table = out.getvalue()
    assert "booking_to_confirmation_p50" in table and "rule_matching_conditions" in table
    assert "journeys" in table  # the children's notes came back with their numbers
