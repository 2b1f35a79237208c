"""The shipped Grafana dashboard queries metrics we export, and a worker's counts reach the
API's /metrics in multiprocess mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from outreach.core.metrics import NOTIFICATIONS, SENDS, WRITEBACKS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "outreach-operations.json"


def _exported() -> dict[str, set[str]]:
    """Metric name (as scraped, with _total) → its label names."""
    return {f"{c._name}_total": set(c._labelnames)  # type: ignore[attr-defined]
            for c in (NOTIFICATIONS, SENDS, WRITEBACKS)}


def test_every_panel_queries_metrics_and_labels_we_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    panels = dashboard["panels"]
    assert len(panels) >= 6
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            names = set(re.findall(r"outreach_[a-z_]+", target["expr"]))
            assert names and names <= set(exported), (panel["title"], names)
            labels = set(re.findall(r"(?:by \(|\{)(\w+)", target["expr"]))
            assert all(any(label in exported[n] for n in names) for label in labels), (
                panel["title"], labels)


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, panel["title"]
        cells |= mine


def test_a_worker_processes_counts_reach_the_api_metrics(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def python(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                              capture_output=True, text=True, cwd=ROOT)
        return done.stdout

    python("from outreach.core.metrics import SENDS; SENDS.labels('sent').inc(3)")  # a worker
    python("from outreach.core.metrics import SENDS; SENDS.labels('sent').inc(2)")  # another
    scraped = python("from outreach.core.metrics import exposition; "
                     "print(exposition().decode())")  # the API process
    assert 'outreach_steps_total{state="sent"} 5.0' in scraped
