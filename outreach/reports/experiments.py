"""Experiments: for each step that sends message variants, each arm's confirmation and no-show
rates with 95% confidence intervals (Wilson), and whether the difference from the first arm is
significant yet (two-proportion z-test, two-sided, 5%). Pure."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from outreach.reports.facts import FULFILLED, AppointmentFacts

Z95 = 1.959964
ALPHA = 0.05


def wilson(successes: int, trials: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion; None without trials."""
    if trials == 0:
        return None
    p = successes / trials
    centre = p + Z95**2 / (2 * trials)
    spread = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2))
    scale = 1 + Z95**2 / trials
    # At 0 or all successes a bound is 0 or 1 exactly, but rounding errors can leave -1e-17
    # (shown as -0.0): clamp to a proportion.
    low, high = max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)
    return round(low, 4), round(high, 4)


def _exact_p(s1: int, n1: int, s2: int, n2: int) -> float | None:
    if n1 == 0 or n2 == 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if s1 / n1 == s2 / n2 else 0.0
    z = abs(s1 / n1 - s2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def p_value(s1: int, n1: int, s2: int, n2: int) -> float | None:
    """Two-sided p of the two-proportion z-test (pooled), to 4 places; None when it cannot be
    computed."""
    p = _exact_p(s1, n1, s2, n2)
    return None if p is None else round(p, 4)


def _rate(successes: int, trials: int) -> dict[str, Any]:
    return {"successes": successes, "of": trials,
            "rate": round(successes / trials, 4) if trials else None,
            "ci95": wilson(successes, trials)}


def _arm(facts: list[AppointmentFacts]) -> dict[str, Any]:
    confirmed = sum("confirm" in f.intents() for f in facts)
    no_show = sum(f.status == "noshow" for f in facts)
    attended_or_not = no_show + sum(f.status in FULFILLED for f in facts)
    return {"appointments": len(facts), "confirmation": _rate(confirmed, len(facts)),
            "no_show": _rate(no_show, attended_or_not)}


def _verdict(p: float | None) -> str:
    if p is None:
        return "no data yet"
    return "significant" if p < ALPHA else "not yet significant"


def experiments(facts: list[AppointmentFacts]) -> list[dict[str, Any]]:
    """One entry per (journey, step) that sent variants: its arms, each compared with the
    first (arms in name order)."""
    arms: dict[tuple[str, str], dict[str, list[AppointmentFacts]]] = defaultdict(
        lambda: defaultdict(list))
    for item in facts:
        seen = {(m.journey, m.step, m.variant) for m in item.messages if m.variant}
        for journey, step, variant in seen:
            assert variant is not None
            arms[(journey, step)][variant].append(item)
    found = []
    for (journey, step), by_variant in sorted(arms.items()):
        names = sorted(by_variant)
        figures = {name: _arm(by_variant[name]) for name in names}
        first = figures[names[0]]
        for name in names[1:]:
            arm = figures[name]
            for measure in ("confirmation", "no_show"):
                p = _exact_p(arm[measure]["successes"], arm[measure]["of"],
                            first[measure]["successes"], first[measure]["of"])
                arm[measure]["p_vs_first"] = None if p is None else round(p, 4)
                arm[measure]["verdict"] = _verdict(p)  # on the exact p, not the rounded one
        found.append({"journey": journey, "step": step, "arms": figures})
    return found
