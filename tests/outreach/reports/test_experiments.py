"""Experiments in the outcome report, against docs/metrics.md, on facts built by hand (pure): the
Wilson interval and the two-proportion z-test against published values, and each arm's counts,
rates and verdict."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from outreach.reports.experiments import experiments, p_value, wilson
from outreach.reports.facts import AppointmentFacts, Message
from tests.outreach.reports.test_outcomes import appt, full_report, msg, said

Z = 1.959964  # the 97.5th percentile of the standard normal


def textbook_wilson(successes: int, trials: int) -> tuple[float, float]:
    """Wilson (1927) as the roots in p of (p̂ - p)² = z² p (1 - p) / n: a quadratic, solved
    directly rather than by the centre-and-spread form the report uses."""
    phat = successes / trials
    a = 1 + Z**2 / trials
    b = -(2 * phat + Z**2 / trials)
    c = phat**2
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return round((-b - root) / (2 * a), 4), round((-b + root) / (2 * a), 4)


# --- the statistics -----------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "trials"), [
    (0, 10), (5, 10), (10, 10), (81, 263), (1, 1), (0, 1), (3, 7), (999, 1000), (1, 5000),
])
def test_wilson_is_the_textbook_interval(successes: int, trials: int) -> None:
    assert wilson(successes, trials) == textbook_wilson(successes, trials)


@pytest.mark.parametrize(("successes", "trials", "published"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
    # seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score, no
    # continuity correction).
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_matches_published_intervals(
    successes: int, trials: int, published: tuple[float, float]
) -> None:
    assert wilson(successes, trials) == published


def test_wilson_bounds_stay_inside_zero_and_one() -> None:
    assert wilson(0, 0) is None  # no trials: no interval
    for trials in range(1, 500):
        none_yet, all_yet = wilson(0, trials), wilson(trials, trials)
        assert none_yet is not None and all_yet is not None
        # Exactly 0 and 1: never -0.0 (shown as "-0.0%") or 1.0000000002.
        low, high = none_yet[0], all_yet[1]
        assert (low, math.copysign(1, low), high) == (0.0, 1.0, 1.0), trials
    assert wilson(5, 10) == (0.2366, 0.7634)  # symmetric around one half


def test_p_value_known_cases() -> None:
    # R: prop.test(c(40, 60), c(100, 100), correct = FALSE) gives X-squared = 8, p = 0.004678.
    assert p_value(40, 100, 60, 100) == 0.0047
    assert p_value(60, 100, 40, 100) == 0.0047  # two-sided: the order does not matter
    # R: prop.test(c(15, 25), c(50, 50), correct = FALSE): X-squared = 4.1667, p = 0.04123.
    assert p_value(15, 50, 25, 50) == 0.0412
    # Equal rates, whatever the sample sizes, including all or nothing in both.
    assert p_value(5, 10, 50, 100) == 1.0
    assert p_value(0, 10, 0, 30) == 1.0
    assert p_value(10, 10, 7, 7) == 1.0
    # Nothing to compare.
    assert p_value(0, 0, 3, 10) is None
    assert p_value(3, 10, 0, 0) is None
    assert p_value(0, 0, 0, 0) is None


def test_p_value_is_the_normal_tail_of_the_pooled_z() -> None:
    s1, n1, s2, n2 = 12, 80, 25, 90
    pooled = (s1 + s2) / (n1 + n2)
    z = (s2 / n2 - s1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    two_sided = 2 * (1 - 0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert p_value(s1, n1, s2, n2) == round(two_sided, 4)


# --- arms, counts and verdicts ------------------------------------------------------------------


def sent(variant: str | None, *, step: str = "reminder-72h", journey: str = "reminders",
         failed: bool = False) -> Message:
    return replace(msg(step=step, journey=journey, failed=failed), variant=variant)


def arm_of(name: str, variant: str, status: str = "booked", confirmed: bool = False,
           **kwargs: Any) -> AppointmentFacts:
    return appt(name, status, sent=[sent(None, step="booked"), sent(variant, **kwargs)],
                replies=[said("confirm")] if confirmed else [])


def rate(successes: int, trials: int) -> dict[str, Any]:
    return {"successes": successes, "of": trials,
            "rate": round(successes / trials, 4) if trials else None,
            "ci95": textbook_wilson(successes, trials) if trials else None}


def test_no_variants_no_experiments() -> None:
    assert experiments([]) == []
    assert experiments([appt("a", sent=[msg()]), appt("b")]) == []
    assert full_report([appt("a", sent=[msg()])])["experiments"] == []


def test_each_arm_counts_its_appointments_confirmations_and_no_shows() -> None:
    facts = [
        # long: 4 appointments, 1 confirmed; 1 no-show of 3 recorded outcomes (1 still booked)
        arm_of("a1", "long", "fulfilled", confirmed=True), arm_of("a2", "long", "noshow"),
        arm_of("a3", "long", "arrived"), arm_of("a4", "long"),
        # short: 3 appointments, 2 confirmed; no no-show of 2 recorded (checked-in is attended)
        arm_of("b1", "short", "fulfilled", confirmed=True),
        arm_of("b2", "short", "checked-in", confirmed=True), arm_of("b3", "short", "cancelled"),
        # not in the experiment: no variant sent
        appt("c1", "noshow", sent=[sent(None)], replies=[said("confirm")]),
    ]

    (found,) = experiments(facts)

    assert (found["journey"], found["step"]) == ("reminders", "reminder-72h")
    assert list(found["arms"]) == ["long", "short"]  # in name order; "long" is the first
    assert found["arms"]["long"] == {"appointments": 4, "confirmation": rate(1, 4),
                                     "no_show": rate(1, 3)}
    short = found["arms"]["short"]
    assert short["appointments"] == 3
    assert {k: short["confirmation"][k] for k in rate(2, 3)} == rate(2, 3)
    assert {k: short["no_show"][k] for k in rate(0, 2)} == rate(0, 2)
    assert short["confirmation"]["p_vs_first"] == p_value(2, 3, 1, 4)
    assert short["no_show"]["p_vs_first"] == p_value(0, 2, 1, 3)
    assert short["confirmation"]["verdict"] == short["no_show"]["verdict"] == \
        "not yet significant"
    assert full_report(facts)["experiments"] == [found]


def test_arms_are_ordered_by_name_not_by_first_seen_and_each_is_compared_with_the_first() -> None:
    facts = [arm_of("z", "zeta", confirmed=True), arm_of("m", "mu"), arm_of("a", "alpha"),
             arm_of("a2", "alpha")]

    (found,) = experiments(facts)

    assert list(found["arms"]) == ["alpha", "mu", "zeta"]
    assert "p_vs_first" not in found["arms"]["alpha"]["confirmation"]
    assert "verdict" not in found["arms"]["alpha"]["no_show"]
    assert found["arms"]["zeta"]["confirmation"]["p_vs_first"] == p_value(1, 1, 0, 2)
    assert found["arms"]["mu"]["confirmation"]["p_vs_first"] == 1.0  # 0/1 against 0/2


def _arm(prefix: str, variant: str, size: int, confirmed: int, no_shows: int,
         attended: int) -> list[AppointmentFacts]:
    """`size` appointments: the first `confirmed` confirmed; `no_shows` missed, `attended`
    came, the rest still booked."""
    statuses = ["noshow"] * no_shows + ["fulfilled"] * attended
    statuses += ["booked"] * (size - len(statuses))
    return [arm_of(f"{prefix}{n}", variant, statuses[n], confirmed=n < confirmed)
            for n in range(size)]


def test_a_small_sample_is_not_yet_significant_however_different_it_looks() -> None:
    # 1 in 5 against 4 in 5 confirmed; 1 of 4 against 3 of 4 missed their visit.
    facts = [*_arm("a", "control", 5, 1, 1, 3), *_arm("b", "short", 5, 4, 3, 1)]

    (found,) = experiments(facts)

    short = found["arms"]["short"]
    assert (short["confirmation"]["rate"], short["no_show"]["rate"]) == (0.8, 0.75)
    assert 0.05 < short["confirmation"]["p_vs_first"] < 0.1
    assert short["confirmation"]["verdict"] == "not yet significant"
    assert short["no_show"]["verdict"] == "not yet significant"


def test_a_large_clear_difference_is_significant() -> None:
    # 60 of 200 against 100 of 200 confirmed; 40 of 180 against 18 of 180 missed their visit.
    facts = [*_arm("a", "control", 200, 60, 40, 140), *_arm("b", "short", 200, 100, 18, 162)]

    (found,) = experiments(facts)

    control, short = found["arms"]["control"], found["arms"]["short"]
    assert control["confirmation"] == rate(60, 200) and control["no_show"] == rate(40, 180)
    assert short["confirmation"]["p_vs_first"] < 0.001
    assert short["confirmation"]["verdict"] == "significant"
    no_show_p = p_value(18, 180, 40, 180)
    assert no_show_p is not None and no_show_p < 0.05
    assert short["no_show"]["p_vs_first"] == no_show_p
    assert short["no_show"]["verdict"] == "significant"
    # The intervals do not overlap: the short arm's lower bound is above the control's upper.
    assert short["confirmation"]["ci95"][0] > control["confirmation"]["ci95"][1]


def test_without_recorded_outcomes_the_no_show_verdict_is_no_data_yet() -> None:
    facts = [*_arm("a", "control", 4, 1, 0, 0), *_arm("b", "short", 3, 2, 0, 0)]

    (found,) = experiments(facts)

    for arm in found["arms"].values():
        assert arm["no_show"] == {**rate(0, 0), **arm["no_show"]}
        assert arm["no_show"]["rate"] is None and arm["no_show"]["ci95"] is None
    short = found["arms"]["short"]["no_show"]
    assert (short["p_vs_first"], short["verdict"]) == (None, "no data yet")
    assert found["arms"]["short"]["confirmation"]["verdict"] == "not yet significant"


def test_one_experiment_per_journey_and_step() -> None:
    facts = [
        appt("a", sent=[sent("long"), sent("early", step="reminder-24h")],
             journeys=("reminders",)),
        appt("b", sent=[sent("short"), sent("late", step="reminder-24h")]),
        appt("c", sent=[sent("long", journey="dental")], journeys=("dental",)),
        appt("d", sent=[sent("short", journey="dental")], journeys=("dental",)),
    ]

    found = experiments(facts)

    assert [(e["journey"], e["step"], list(e["arms"])) for e in found] == [
        ("dental", "reminder-72h", ["long", "short"]),
        ("reminders", "reminder-24h", ["early", "late"]),
        ("reminders", "reminder-72h", ["long", "short"]),
    ]
    assert all(arm["appointments"] == 1 for e in found for arm in e["arms"].values())


def test_a_single_arm_so_far_has_nothing_to_compare() -> None:
    (found,) = experiments([arm_of("a", "long", confirmed=True), arm_of("b", "long")])

    assert found["arms"] == {"long": {"appointments": 2, "confirmation": rate(1, 2),
                                      "no_show": rate(0, 0)}}


def test_a_filter_narrows_the_experiments_too() -> None:
    facts = [arm_of("a", "long", confirmed=True), arm_of("b", "short"),
             appt("c", sent=[sent("long", journey="dental")], journeys=("dental",))]

    result = full_report(facts, filters={"journey": "dental"})

    assert [(e["journey"], list(e["arms"])) for e in result["experiments"]] == [
        ("dental", ["long"])]
