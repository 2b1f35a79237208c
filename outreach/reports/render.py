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
    if result.get("service_recovery"):
        lines.append(_recovery_line(result["service_recovery"]))
    lines += _access_lines(result.get("access") or {})
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


def _access_lines(access: Mapping[str, Any]) -> list[str]:
    """One line per kind of offer made in the period, and the freed times; none without offers."""
    lines = []
    for kind, what in (("reschedule", "new times offered by reply"),
                       ("book", "times offered to book a new appointment"),
                       ("waitlist", "freed times offered to the waitlist")):
        figures = access.get(kind) or {}
        if figures.get("offers"):
            gained = (f", {figures['moved_sooner']} moved sooner by "
                      f"{figures['days_gained_total']} days in all" if figures["moved_sooner"]
                      else "")
            lines.append(f"{what}: {_count(figures['offers'], 'offer')} to "
                         f"{_count(figures['patients'], 'patient')}, {figures['booked']} booked "
                         f"({show(figures['acceptance_rate'])}), {figures['expired']} expired"
                         f"{gained}")
    backfills = access.get("backfills") or {}
    if backfills.get("freed"):
        lines.append(f"cancellations backfilled: {backfills['filled']} of {backfills['freed']} "
                     f"({show(backfills['fill_rate'])})")
    return lines


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:g} h"


def _recovery_line(recovery: Mapping[str, Any]) -> str:
    to_close, open_ = recovery["hours_to_close"], recovery["hours_open"]
    return (f"service recovery: {_count(recovery['created'], 'task')} opened, "
            f"{recovery['open']} open now, {recovery['closed']} closed; closed after "
            f"{_hours(to_close['median'])} median, {_hours(to_close['p90'])} p90; open "
            f"{_hours(open_['median'])} median, {_hours(open_['p90'])} p90 (open ones until now)")


def recovery_rows(recovery: Mapping[str, Any]) -> list[list[str]]:
    """The service-recovery figures as (figure, value) rows; hours empty when there is none."""
    rows = [[name, str(recovery[name])] for name in ("created", "open", "closed",
                                                     "status_from_ehr")]
    for spread in ("hours_open", "hours_to_close"):
        rows += [[f"{spread}_{q}", "" if recovery[spread][q] is None else str(recovery[spread][q])]
                 for q in ("median", "p90")]
    return rows


def as_csv(result: Mapping[str, Any]) -> str:
    """Headline figures as dimension `all`, then every breakdown, one row per group; then, after
    an empty line, the service-recovery figures as `service_recovery,value` rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dimension", "value", *BREAKDOWN_COLUMNS])
    writer.writerow(["all", "all", *(str(result[c]) if result[c] is not None else ""
                                     for c in BREAKDOWN_COLUMNS)])
    writer.writerows(breakdown_rows(result))
    if result.get("service_recovery"):
        writer.writerow([])
        writer.writerow(["service_recovery", "value"])
        writer.writerows(recovery_rows(result["service_recovery"]))
    return out.getvalue()
