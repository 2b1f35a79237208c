"""The benchmark runner stays runnable: its JSON lines carry name, value, baseline and ratio."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

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
