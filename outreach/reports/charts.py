"""The dashboard's charts, drawn on the server as SVG with pygal and shown as images (no script
runs in the page; the numbers behind each chart are in a table next to it)."""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import pygal
from pygal.style import Style

_STYLE = Style(background="#ffffff", plot_background="#ffffff", foreground="#1d2433",
               foreground_strong="#1d2433", foreground_subtle="#5b6475",
               colors=("#2459a8", "#b3261e", "#1f7a4d", "#8a6d00", "#6a3fa0"),
               font_family="system-ui, sans-serif", label_font_size=12,
               major_label_font_size=12, legend_font_size=13, title_font_size=15)
_SIZE = {"width": 640, "height": 280, "explicit_size": True, "margin": 12}


def _data_uri(chart: Any) -> str:
    svg = chart.render(is_unicode=True)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def rates_by_week(weeks: Sequence[tuple[date, Mapping[str, Any]]]) -> str:
    """No-show and confirmation rates per week, in percent."""
    chart = pygal.Line(style=_STYLE, js=[], show_dots=True, dots_size=4, range=(0, 100),
                       y_title="%", legend_at_bottom=True, allow_interruptions=True,
                       title="No-show and confirmation rate per week", **_SIZE)
    chart.x_labels = [week.strftime("%d %b") for week, _ in weeks]
    chart.add("no-show rate", [_percent(figures["no_show_rate"]) for _, figures in weeks])
    chart.add("confirmation rate",
              [_percent(figures["confirmation_rate"]) for _, figures in weeks])
    return _data_uri(chart)


def messages_by_day(per_day: Sequence[Mapping[str, Any]]) -> str:
    """Messages sent per day, stacked by channel."""
    days = sorted({row["day"] for row in per_day})
    by_channel: dict[str, dict[str, int]] = defaultdict(dict)
    for row in per_day:
        by_channel[row["channel"]][row["day"]] = row["messages"]
    chart = pygal.StackedBar(style=_STYLE, js=[], legend_at_bottom=True,
                             title="Messages sent per day", x_label_rotation=30, **_SIZE)
    chart.x_labels = [day[5:] for day in days]
    for channel in sorted(by_channel):
        chart.add(channel, [by_channel[channel].get(day, 0) for day in days])
    # Whole messages on the axis, about five steps whatever the volume.
    tallest = max((sum(by_channel[c].get(day, 0) for c in by_channel) for day in days),
                  default=0)
    step = max(1, -(-tallest // 5))
    if days:  # pygal fails on fixed labels without a series; alone it says "No data"
        chart.y_labels = list(range(0, tallest + step, step))
    return _data_uri(chart)
