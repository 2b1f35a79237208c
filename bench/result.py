"""One benchmark measurement with its same-run baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "value": round(self.value, 3), "unit": self.unit,
                "baseline": round(self.baseline, 3), "ratio": round(self.ratio, 3)}


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    return statistics.median(samples)
