"""The outcome report as a terminal table or CSV (JSON is the dictionary itself)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from outreach.reports.outcomes import BREAKDOWN_COLUMNS, HEADLINE, breakdown_rows, show


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def as_table(result: Mapping[str, Any]) -> str:
    period = result["period"]
    lines = [f"Outcomes for appointments from {period['from']} to {period['to']} "
             f"({period['timezone']})"]
    if result["filters"]:
        lines.append("filters: " + ", ".join(f"{k}={v}" for k, v in result["filters"].items()))
    lines += ["", *_table([["figure", "value"],
                           *([label, show(result[key])] for key, label in HEADLINE)])]
    side = result["reached_vs_unreached"]
    lines += ["", *_table([["", "appointments", "fulfilled", "no-show", "no-show rate"],
                           *([name, str(side[name]["appointments"]), str(side[name]["fulfilled"]),
                              str(side[name]["no_show"]), show(side[name]["no_show_rate"])]
                             for name in ("reached", "unreached"))])]
    cost = result["cost"]
    channels = ", ".join(f"{n} {c}" for c, n in result["messages"].items()) or "none"
    lines += ["", f"messages: {channels}; SMS segments: {result['segments']} "
                  f"(≈ {cost['amount']:.2f} {cost['currency']})"]
    survey = result["surveys"]
    if survey["answers"]:
        recovery = _count(survey["service_recovery_tasks"], "service-recovery task")
        lines.append(f"surveys: {_count(survey['answers'], 'answer')}, NPS-style "
                     f"{survey['nps']}, {recovery}")
    for experiment in result.get("experiments", []):
        lines += ["", f"experiment {experiment['journey']}/{experiment['step']}:"]
        for name, arm in experiment["arms"].items():
            confirmation, no_show = arm["confirmation"], arm["no_show"]
            verdict = confirmation.get("verdict")
            lines.append(f"  {name}: {arm['appointments']} appointments, confirmation "
                         f"{show(confirmation['rate'])}, no-show {show(no_show['rate'])}"
                         + (f" ({verdict}, p = {confirmation['p_vs_first']})" if verdict
                            and confirmation.get("p_vs_first") is not None else ""))
    by_journey = [[name, *(show(figures[c]) for c in BREAKDOWN_COLUMNS)]
                  for name, figures in result["by_journey"].items()]
    if by_journey:
        lines += ["", *_table([["journey", *BREAKDOWN_COLUMNS], *by_journey])]
    return "\n".join(lines) + "\n"


def as_csv(result: Mapping[str, Any]) -> str:
    """Headline figures as dimension `all`, then every breakdown, one row per group."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dimension", "value", *BREAKDOWN_COLUMNS])
    writer.writerow(["all", "all", *(str(result[c]) if result[c] is not None else ""
                                     for c in BREAKDOWN_COLUMNS)])
    writer.writerows(breakdown_rows(result))
    return out.getvalue()
